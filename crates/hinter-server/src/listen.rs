//! Serving the API on a TCP listener with connection limits: idle keep-alive connections
//! and request headers that do not arrive in time are closed, and the number of open
//! connections is capped. Past the cap a small reserve of connections still answers
//! `/healthz` and `/readyz` (every other route: 503 `overloaded`); past the reserve a new
//! connection is closed at once. Accept errors (say, `EMFILE`) are logged and retried after
//! a short pause, never fatal.
//!
//! A response body being written (an event stream of `GET /api/v1/events` included) keeps
//! its connection as long as bytes move: the idle clock runs once the handler has answered
//! and restarts with every write, so a stream's keep-alive comments keep it open, and a
//! client that stops reading is closed after the idle timeout. Once the server is stopping,
//! a body that moves nothing for [`STOPPING_STALL`] is cut.
//!
//! The request body's own time limit is [`crate::ServerConfig::body_timeout`], applied where
//! bodies are read.
//!
//! With [`serve_tls`] every connection is TLS. The handshake runs in the connection's own
//! task, holding its place under the cap, and must be done within
//! [`ConnLimits::header_timeout`] of the accept; a failed or stalled handshake is dropped
//! quietly (debug log), as any other client that goes away. The limits above then apply to
//! the decrypted stream, exactly as without TLS.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::tls::TlsConfig;
use crate::{health, AppState};

/// Connections accepted past [`ConnLimits::max_connections`] that may still ask for
/// `/healthz` or `/readyz`.
pub const HEALTH_RESERVE: usize = 32;

/// Pause after an accept error that is not about one connection (`EMFILE`, `ENFILE`,
/// `ENOBUFS`), so a full file table does not make the accept loop spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Once the server is stopping, a connection whose response body has moved no bytes for
/// this long is closed (event streams themselves end within a second of the stop).
const STOPPING_STALL: Duration = Duration::from_secs(2);

/// How often the same overload warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Connection limits of [`serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections served at once (the health reserve comes on top).
    pub max_connections: usize,
    /// A connection with no request under way and no bytes moving for this long is closed.
    /// A request being handled (a long-poll included) is never cut by it.
    pub idle_timeout: Duration,
    /// A request's headers must be complete this long after its first byte arrived.
    pub header_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `state`'s API on `listener` until `shutdown` resolves, then stops accepting, lets
/// open requests finish (idle connections close at once) and returns when every connection
/// is closed.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve_maybe_tls(listener, state, limits, None, shutdown).await;
}

/// As [`serve`], over TLS (HTTPS) with `tls`'s certificate.
pub async fn serve_tls(
    listener: TcpListener,
    state: AppState,
    limits: ConnLimits,
    tls: TlsConfig,
    shutdown: impl Future<Output = ()>,
) {
    serve_maybe_tls(listener, state, limits, Some(tls), shutdown).await;
}

async fn serve_maybe_tls(
    listener: TcpListener,
    state: AppState,
    limits: ConnLimits,
    tls: Option<TlsConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let mut app = crate::router(state.clone());
    if tls.is_some() {
        app = app.layer(axum::Extension(crate::dashboard::OverTls));
    }
    let reserve_app = reserve_router(state);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let reserve = Arc::new(Semaphore::new(HEALTH_RESERVE));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a clone of `closed_rx`; `closed()` resolves when all are gone.
    let (closed_tx, closed_rx) = watch::channel(());
    let mut warned: Option<Instant> = None;
    let mut should_warn = move || {
        let now = Instant::now();
        let due = warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if due {
            warned = Some(now);
        }
        due
    };
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    if should_warn() {
                        tracing::error!(error = %e, "cannot accept connections; retrying \
                            (raise the open file limit or lower --max-connections)");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = if let Ok(permit) = slots.clone().try_acquire_owned() {
            Conn {
                app: app.clone(),
                keep_alive: true,
                permit,
            }
        } else if let Ok(permit) = reserve.clone().try_acquire_owned() {
            if should_warn() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached: new connections get 503 except for health checks"
                );
            }
            Conn {
                app: reserve_app.clone(),
                keep_alive: false,
                permit,
            }
        } else {
            if should_warn() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit and health reserve reached: closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let mut conn_limits = limits.clone();
        if !conn.keep_alive {
            // A reserve connection answers one request; it may not sit idle long.
            conn_limits.idle_timeout = limits.idle_timeout.min(limits.header_timeout);
        }
        let (stop, closed) = (stop_rx.clone(), closed_rx.clone());
        match &tls {
            None => {
                tokio::spawn(serve_connection(stream, conn, conn_limits, stop, closed));
            }
            Some(tls) => {
                let acceptor = tls.acceptor.clone();
                tokio::spawn(async move {
                    if let Some(stream) =
                        handshake(&acceptor, stream, &conn_limits, stop.clone()).await
                    {
                        serve_connection(stream, conn, conn_limits, stop, closed).await;
                    }
                    // Otherwise `conn`, and with it the connection's place, goes here.
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(closed_rx);
    closed_tx.closed().await;
}

/// What one accepted connection is served with.
struct Conn {
    app: Router,
    keep_alive: bool,
    /// Its place under the connection cap (or in the reserve), given back when it closes.
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// Errors of `accept` that concern one connection only: take the next one at once.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// The routes of a connection taken past the cap: health checks, and 503 for the rest.
fn reserve_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(overloaded)
        .with_state(state)
}

async fn overloaded(method: Method, uri: Uri) -> ApiError {
    ApiError::overloaded(format!(
        "the server has too many open connections; {method} {} was not served, try again later",
        uri.path()
    ))
}

/// The server side of a TLS handshake on `stream`: `None` when it failed, took longer than
/// the header timeout, or the server began to stop meanwhile.
async fn handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    limits: &ConnLimits,
    mut stop: watch::Receiver<bool>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    tokio::select! {
        done = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)) => match done {
            Ok(Ok(stream)) => Some(stream),
            // Scanners, plain HTTP on the TLS port, clients that distrust the certificate:
            // a client's problem, not the server's, so no more than a debug line.
            Ok(Err(e)) => {
                tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(peer = ?peer, "TLS handshake not done within the header timeout");
                None
            }
        },
        _ = stop.wait_for(|stopping| *stopping) => None,
    }
}

async fn serve_connection<S>(
    stream: S,
    conn: Conn,
    mut limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    _closed: watch::Receiver<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let app = conn.app;
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let request = RequestGuard::start(service_activity.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(Body::new)).await;
            drop(request);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.keep_alive(conn.keep_alive);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&limits);
        let notified = activity.changed.notified();
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = notified => {}
            () = sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("closing a connection that was idle or too slow to send its headers");
                    break;
                }
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                // A response still being written (a long download, an event stream whose
                // client stopped reading) must move bytes to keep the connection now.
                limits.idle_timeout = limits.idle_timeout.min(STOPPING_STALL);
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
    drop(conn.permit);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, for its time limits.
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when a deadline may have moved earlier or appeared.
    changed: Notify,
}

struct ActivityState {
    /// Requests being handled (more than one only with pipelining).
    in_flight: usize,
    /// Bytes moved, or a request ended: the idle clock starts here.
    last_activity: Instant,
    /// The first byte of a request whose headers are not complete yet.
    head_started: Option<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                last_activity: Instant::now(),
                head_started: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is to be closed; `None` while a request is being handled.
    fn deadline(&self, limits: &ConnLimits) -> Option<Instant> {
        let state = self.lock();
        if state.in_flight > 0 {
            return None;
        }
        let idle = state.last_activity + limits.idle_timeout;
        Some(match state.head_started {
            Some(at) => idle.min(at + limits.header_timeout),
            None => idle,
        })
    }

    fn read(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        state.last_activity = now;
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(now);
            drop(state);
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.lock().last_activity = Instant::now();
    }
}

/// Counts a request as being handled from the moment its headers are in until its
/// handler has answered (or was dropped).
struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn start(activity: Arc<Activity>) -> Self {
        {
            let mut state = activity.lock();
            state.in_flight += 1;
            state.head_started = None;
        }
        activity.changed.notify_one();
        Self(activity)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.last_activity = Instant::now();
        }
        self.0.changed.notify_one();
    }
}

/// A socket (or the plain side of a TLS stream) that reports the bytes it moves to its
/// connection's [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
