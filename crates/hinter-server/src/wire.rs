//! Request and response bodies as they appear on the wire (see `docs/http-api.md`): the
//! shared definitions of `hinter-wire`, and the few forms only the server reads.

pub use hinter_wire::*;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

/// `POST /api/v1/jobs/batch` body as the server reads it: items are kept raw so each can be
/// size-checked and parsed with its index in error messages. Its schema is
/// [`hinter_wire::BatchRequest`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatchRequest<'a> {
    #[serde(borrow)]
    pub jobs: Vec<&'a RawValue>,
}

/// `GET /api/v1/jobs/{id}` query (an unknown parameter is 400, as on every route).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetJobQuery {
    pub wait: Option<String>,
}

/// `GET /api/v1/jobs` query; every value is parsed by hand to name the bad one. An unknown
/// parameter is 400.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub state: Option<String>,
    pub queue: Option<String>,
    pub job: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
    /// Comma-separated: `payload`, `result`, `errors`, `runs`.
    pub include: Option<String>,
}

/// `GET /api/v1/jobs` answer as the server writes it: each job is a summary built from the
/// [`hinter_core::Job`] (see `jobs::summary`), so its schema is [`hinter_wire::Page`].
#[derive(Debug, Serialize)]
pub struct JobList {
    pub jobs: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/outcomes` body as the server reads it: items kept raw so each can be
/// size-checked and parsed with its index in error messages. Its schema is
/// [`hinter_wire::OutcomesBody`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutcomes<'a> {
    #[serde(borrow)]
    pub outcomes: Vec<&'a RawValue>,
}
