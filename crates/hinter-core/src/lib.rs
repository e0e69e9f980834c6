//! hinter's domain core: what a job is, its states, the retry policy, durations, and the
//! [`store::Store`] interface that every backend implements.
//!
//! Nothing here does I/O. Time enters through [`clock::Clock`] so rules can be tested with a
//! clock the test controls.

pub mod access;
pub mod callback_policy;
pub mod clock;
pub mod cluster;
pub mod definition;
pub mod duration;
pub mod event;
pub mod followup;
pub mod handoff;
pub mod job;
pub mod limits;
pub mod listing;
pub mod number;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod output;
pub mod retry;
pub mod schedule;
pub mod store;

pub use clock::{Clock, ManualClock, ShiftedClock, SystemClock};
pub use cluster::{Backend, Cluster, Leadership, ProcessInfo};
pub use definition::{DefinitionInfo, Definitions, FieldError, JobDefinition, JobSpec};
pub use duration::{format_duration, parse_duration, DurationError};
pub use event::{EventFilter, EventKind, EventPage, JobEvent};
pub use job::*;
pub use listing::{JobPage, ListCursor};
pub use output::{JobReport, LogLine, LogQuery, LogStream, NewLogLine, Progress, ProgressUpdate};
pub use store::{Store, StoreError, StoreEvent};
