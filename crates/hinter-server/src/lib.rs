//! hinter's HTTP API (`docs/http-api.md`): jobs, the worker lease protocol, queues and health.
//!
//! [`router`] builds an [`axum::Router`] over an [`AppState`]; the binary serves it. Every
//! answer that is not a success has the shape `{"error": {"code", "message"}}`, including
//! unknown routes, wrong methods, bad JSON and oversized bodies.
//!
//! Architecture invariant: every route is one entry of [`routes`], with its method, path and
//! [`Access`]; the router is built from that list alone and puts [`auth::require`] in front
//! of every route that is not [`Access::Open`]. A route without an access cannot be written.

use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use hinter_core::{Clock, Cluster, Definitions, Store};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod audit;
pub mod auth;
pub mod dashboard;
pub mod error;
mod events;
mod extract;
mod health;
pub mod hooks;
pub mod idempotency;
mod input_rules;
mod jobs;
pub mod listen;
pub mod live;
pub mod metrics;
pub mod openapi;
mod output;
mod queues;
pub mod schedules;
pub mod stats;
mod tls;
pub mod wire;
mod worker;
mod workers;

pub use auth::{Access, AuthConfig, Caller, QueueCheck, Scope};
pub use error::{ApiError, ApiResult};
pub use listen::{serve, serve_tls, ConnLimits};
pub use live::EventHub;
pub use metrics::Metrics;
pub use tls::{TlsConfig, TlsError};

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
    /// How long an `Idempotency-Key` of an enqueue answers its first answer again.
    pub idempotency_ttl: Duration,
    /// Tokens: whether one is required, and those declared in configuration.
    pub auth: AuthConfig,
    /// Per-hook secrets for `POST /hooks/{job}` ([`hooks`]).
    pub hooks: hooks::HookConfig,
    /// What an enqueue's `callback_url` may be.
    pub callbacks: CallbackConfig,
    /// Most Server-Sent-Events streams of `GET /api/v1/events` open at once; past it: 503
    /// with `Retry-After`.
    pub max_event_streams: usize,
    /// An event stream with nothing to send sends a comment line this often, so proxies
    /// keep it open and a dead client is found. Keep it below the idle timeout.
    pub event_keep_alive: Duration,
}

/// Callbacks as the enqueue path checks them (`docs/callbacks.md`); the delivery checks
/// again, at connect time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallbackConfig {
    /// Whether this server has a secret to sign callbacks with; without one an enqueue with
    /// a `callback_url` is refused (422), since every callback is signed.
    pub signing: bool,
    /// The networks callbacks may reach besides public ones: a `callback_url` whose host is
    /// an IP outside them, or `localhost`, is refused at enqueue.
    pub policy: hinter_core::callback_policy::AddressPolicy,
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
            idempotency_ttl: Duration::from_secs(24 * 3600),
            auth: AuthConfig::default(),
            hooks: hooks::HookConfig::default(),
            callbacks: CallbackConfig::default(),
            max_event_streams: 1000,
            event_keep_alive: Duration::from_secs(15),
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
    /// What `GET /metrics` reports; fed by the caller with [`Metrics::observe`].
    pub metrics: Metrics,
    /// The log as one follower reads it, for event streams; fed by [`live::follow_log`]
    /// (unfed, each stream reads the store itself).
    pub hub: EventHub,
}

/// One route: its method, path and who may call it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub method: Method,
    /// In axum's syntax: `/api/v1/jobs/{id}`.
    pub path: &'static str,
    pub access: Access,
}

type Entry = (RouteSpec, MethodRouter<AppState>);

fn entry<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Entry
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    let spec = RouteSpec {
        method,
        path,
        access,
    };
    (spec, axum::routing::on(filter, handler))
}

/// Every route of the API with its access: the one list [`router`] is built from.
fn table() -> Vec<Entry> {
    use Access::{Open, Scope as Needs};
    use QueueCheck as Q;
    use Scope::{Admin, Enqueue, Read, Work};
    let (get, post) = (Method::GET, Method::POST);
    vec![
        entry(get.clone(), "/healthz", Open, health::healthz),
        entry(get.clone(), "/readyz", Open, health::readyz),
        // The API's description holds no data and nothing from the configuration.
        entry(get.clone(), openapi::PATH, Open, openapi::document),
        // The dashboard: the page and its assets hold no data; the session routes check the
        // token themselves (dashboard.rs).
        entry(get.clone(), "/", Open, dashboard::index),
        entry(get.clone(), "/ui/{file}", Open, dashboard::asset),
        entry(get.clone(), "/ui/session", Open, dashboard::session),
        entry(post.clone(), "/ui/login", Open, dashboard::login),
        entry(post.clone(), "/ui/logout", Open, dashboard::logout),
        entry(
            post.clone(),
            "/api/v1/jobs",
            Needs(Enqueue, Q::Body),
            jobs::enqueue,
        ),
        entry(
            get.clone(),
            "/api/v1/jobs",
            Needs(Read, Q::Filter),
            jobs::list,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/batch",
            Needs(Enqueue, Q::Body),
            jobs::enqueue_batch,
        ),
        entry(
            get.clone(),
            "/api/v1/jobs/{id}",
            Needs(Read, Q::Job),
            jobs::show,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/{id}/cancel",
            Needs(Admin, Q::Job),
            jobs::cancel,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/{id}/retry",
            Needs(Admin, Q::Job),
            jobs::retry,
        ),
        entry(
            Method::DELETE,
            "/api/v1/jobs/{id}",
            Needs(Admin, Q::Job),
            jobs::delete,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/{id}/heartbeat",
            Needs(Work, Q::Job),
            worker::heartbeat,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/{id}/complete",
            Needs(Work, Q::Job),
            worker::complete,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/{id}/fail",
            Needs(Work, Q::Job),
            worker::fail,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/{id}/release",
            Needs(Work, Q::Job),
            worker::release,
        ),
        entry(
            post.clone(),
            "/api/v1/outcomes",
            Needs(Work, Q::Body),
            worker::outcomes,
        ),
        entry(
            post.clone(),
            "/api/v1/jobs/{id}/report",
            Needs(Work, Q::Job),
            output::report,
        ),
        entry(
            get.clone(),
            "/api/v1/jobs/{id}/logs",
            Needs(Read, Q::Job),
            output::logs,
        ),
        entry(
            get.clone(),
            "/api/v1/definitions",
            Needs(Read, Q::None),
            output::definitions,
        ),
        entry(
            post.clone(),
            "/api/v1/leases",
            Needs(Work, Q::Body),
            worker::lease,
        ),
        entry(
            get.clone(),
            "/api/v1/events",
            Needs(Read, Q::Filter),
            events::list,
        ),
        entry(
            get.clone(),
            "/api/v1/queues",
            Needs(Read, Q::Restrict),
            queues::list,
        ),
        entry(
            post.clone(),
            "/api/v1/queues/{name}/pause",
            Needs(Admin, Q::Path),
            queues::pause,
        ),
        entry(
            post.clone(),
            "/api/v1/queues/{name}/resume",
            Needs(Admin, Q::Path),
            queues::resume,
        ),
        entry(
            post.clone(),
            "/api/v1/queues/{name}/purge",
            Needs(Admin, Q::Path),
            queues::purge,
        ),
        entry(
            get.clone(),
            "/api/v1/workers",
            Needs(Read, Q::None),
            workers::list,
        ),
        entry(
            get.clone(),
            "/api/v1/stats",
            Needs(Read, Q::Restrict),
            stats::show,
        ),
        entry(
            get.clone(),
            "/metrics",
            Needs(Read, Q::Unlimited),
            metrics::scrape,
        ),
        entry(
            Method::PUT,
            "/api/v1/workers/{id}",
            Needs(Work, Q::None),
            workers::report,
        ),
        entry(
            Method::DELETE,
            "/api/v1/workers/{id}",
            Needs(Work, Q::None),
            workers::remove,
        ),
        entry(
            get.clone(),
            "/api/v1/audit",
            Needs(Admin, Q::Unlimited),
            audit::list,
        ),
        // Schedules span queues: refused to tokens limited to some.
        entry(
            get.clone(),
            "/api/v1/schedules",
            Needs(Read, Q::Unlimited),
            schedules::list,
        ),
        entry(
            post.clone(),
            "/api/v1/schedules",
            Needs(Admin, Q::Unlimited),
            schedules::create,
        ),
        entry(
            get.clone(),
            "/api/v1/schedules/{name}",
            Needs(Read, Q::Unlimited),
            schedules::show,
        ),
        entry(
            Method::PUT,
            "/api/v1/schedules/{name}",
            Needs(Admin, Q::Unlimited),
            schedules::replace,
        ),
        entry(
            Method::DELETE,
            "/api/v1/schedules/{name}",
            Needs(Admin, Q::Unlimited),
            schedules::delete,
        ),
        entry(
            post.clone(),
            "/api/v1/schedules/{name}/pause",
            Needs(Admin, Q::Unlimited),
            schedules::pause,
        ),
        entry(
            post.clone(),
            "/api/v1/schedules/{name}/resume",
            Needs(Admin, Q::Unlimited),
            schedules::resume,
        ),
        entry(
            get,
            "/api/v1/schedules/{name}/occurrences",
            Needs(Read, Q::Unlimited),
            schedules::occurrences,
        ),
        // A token with `enqueue`, or the hook's signature (hooks::require, not auth::require).
        entry(
            post,
            hooks::HOOK_PATH,
            Needs(Enqueue, Q::Filter),
            hooks::receive,
        ),
    ]
}

/// Every route of the API with its method, path and access, in the order of the docs.
pub fn routes() -> Vec<RouteSpec> {
    table().into_iter().map(|(spec, _)| spec).collect()
}

/// The API's routes over `state`, each behind the check of its [`Access`].
pub fn router(state: AppState) -> Router {
    let auth = Arc::new(auth::Authenticator::new(
        state.store.clone(),
        state.config.auth.clone(),
    ));
    let mut router = Router::new();
    for (spec, handler) in table() {
        let handler = match spec.access {
            Access::Open => handler,
            Access::Scope(_, _) if spec.path == hooks::HOOK_PATH => {
                handler.route_layer(axum::middleware::from_fn_with_state(
                    (auth.clone(), state.config.clone()),
                    hooks::require,
                ))
            }
            Access::Scope(scope, _) => handler.route_layer(axum::middleware::from_fn_with_state(
                (auth.clone(), scope),
                auth::require,
            )),
        };
        router = router.route(spec.path, handler);
    }
    let streams = events::Streams::new(state.config.max_event_streams);
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(streams))
        .layer(axum::Extension(auth))
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
