//! hinter's HTTP API (`docs/http-api.md`): jobs, the worker lease protocol, queues and health.
//!
//! [`router`] builds an [`axum::Router`] over an [`AppState`]; the binary serves it. Every
//! answer that is not a success has the shape `{"error": {"code", "message"}}`, including
//! unknown routes, wrong methods, bad JSON and oversized bodies.

use axum::http::{Method, Uri};
use axum::routing::{get, post};
use axum::Router;
use hinter_core::{Clock, Cluster, Definitions, Store};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub mod error;
mod events;
mod extract;
mod health;
mod jobs;
pub mod listen;
mod output;
mod queues;
pub mod wire;
mod worker;
mod workers;

pub use error::{ApiError, ApiResult};
pub use listen::{serve, ConnLimits};

/// Limits and defaults of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Largest body of one job (enqueue, worker calls) and of each item of a batch.
    pub max_job_bytes: usize,
    /// Largest body of a batch enqueue.
    pub max_batch_bytes: usize,
    /// Lease granted when a worker does not ask for one.
    pub default_lease: Duration,
    /// Longest long-poll (`wait`) of `GET /jobs/{id}` and `POST /leases`; longer asks are cut.
    pub max_wait: Duration,
    /// A process not heard from for this long is not listed by `GET /api/v1/workers`.
    pub process_dead_after: Duration,
    /// A request body must arrive whole this long after its handler starts reading it;
    /// later: 408 `request_timeout`.
    pub body_timeout: Duration,
    /// A page of `GET /api/v1/jobs` ends early once its jobs hold this many bytes of
    /// payload, result and error history (always at least one job).
    pub list_max_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_job_bytes: 1024 * 1024,
            max_batch_bytes: 64 * 1024 * 1024,
            default_lease: Duration::from_secs(60),
            max_wait: Duration::from_secs(60),
            process_dead_after: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            list_max_bytes: 8 * 1024 * 1024,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// Live processes and leadership, for `GET /api/v1/workers`.
    pub cluster: Arc<dyn Cluster>,
    pub clock: Arc<dyn Clock>,
    pub definitions: Definitions,
    pub config: Arc<ServerConfig>,
    /// Set once the process has started (and cleared when it stops); `/readyz` reports it.
    pub ready: Arc<AtomicBool>,
}

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/api/v1/jobs", post(jobs::enqueue).get(jobs::list))
        .route("/api/v1/jobs/batch", post(jobs::enqueue_batch))
        .route("/api/v1/jobs/{id}", get(jobs::show))
        .route("/api/v1/jobs/{id}/cancel", post(jobs::cancel))
        .route("/api/v1/jobs/{id}/retry", post(jobs::retry))
        .route("/api/v1/jobs/{id}/heartbeat", post(worker::heartbeat))
        .route("/api/v1/jobs/{id}/complete", post(worker::complete))
        .route("/api/v1/jobs/{id}/fail", post(worker::fail))
        .route("/api/v1/jobs/{id}/release", post(worker::release))
        .route("/api/v1/jobs/{id}/report", post(output::report))
        .route("/api/v1/jobs/{id}/logs", get(output::logs))
        .route("/api/v1/definitions", get(output::definitions))
        .route("/api/v1/leases", post(worker::lease))
        .route("/api/v1/events", get(events::list))
        .route("/api/v1/queues", get(queues::list))
        .route("/api/v1/workers", get(workers::list))
        .route(
            "/api/v1/workers/{id}",
            axum::routing::put(workers::report).delete(workers::remove),
        )
        .route("/api/v1/queues/{name}/pause", post(queues::pause))
        .route("/api/v1/queues/{name}/resume", post(queues::resume))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{method} is not allowed on {}", uri.path()))
}

/// The instant `wait` from now, without overflowing on absurd configured waits.
fn deadline_after(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}
