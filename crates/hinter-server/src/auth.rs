//! Who may call what: bearer tokens, their scopes and queues.
//!
//! Every route of [`crate::routes`] names its [`Access`]; the router puts [`require`] in front
//! of each route that needs a scope, so a route cannot exist without one. [`require`] finds
//! the token (`Authorization: Bearer …`) among the stored and declared ones, checks its
//! scope, and hands the handler a [`Caller`]; handlers check the queues they touch with
//! [`Caller::check_queue`] (the route's [`QueueCheck`] says which).
//!
//! Tokens are read from the store into a cache that is at most [`REFRESH`] old, so a token
//! revoked on the store (`hinter tokens revoke`) is refused within about a second, by every
//! server sharing the store. With no token anywhere and [`AuthConfig::require_tokens`] off,
//! the API is open: the loopback-only mode of `hinter serve`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use hinter_core::access::Scope;
use hinter_core::access::{hash_secret, NewToken, ACTOR_NO_AUTH};
use hinter_core::Store;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};

/// Longest a cached token list is used before it is read again from the store: a revoked
/// token is refused at most this long (plus one store read) after the revocation committed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// How the API authenticates. Part of [`crate::ServerConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// Refuse every request without a valid token, even while no token exists (a server
    /// listening beyond loopback). Off: with no token at all, the API is open.
    pub require_tokens: bool,
    /// Tokens declared in configuration (`hinter.toml`), besides those in the store: name,
    /// SHA-256 of the secret, scopes, queues. A stored token of the same name wins.
    pub declared: Vec<NewToken>,
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health checks.
    Open,
    /// A token holding this scope (or `admin`); the [`QueueCheck`] says how a token limited
    /// to some queues is held to them.
    Scope(Scope, QueueCheck),
}

/// Where a route's queue comes from, for tokens limited to some queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueCheck {
    /// The route touches no queue (the process list).
    None,
    /// The queue of the job `{id}` in the path.
    Job,
    /// The queue `{name}` in the path.
    Path,
    /// The queues in the body: each job's queue (after definitions apply), a lease's queues,
    /// the queue of each job an outcomes request names.
    Body,
    /// A `queue=` filter: a limited token may name only its queues. Without one, a listing
    /// (jobs, events) shows every queue of the token, and a hook is refused.
    Filter,
    /// Listings that span queues are cut to the token's queues.
    Restrict,
    /// Refused to limited tokens: the route spans every queue (the audit record).
    Unlimited,
}

/// Who is calling: a token's name, scopes and queues, or nobody ([`ACTOR_NO_AUTH`]) when the
/// API is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    name: Arc<str>,
    scopes: Arc<[Scope]>,
    /// `None`: every queue.
    queues: Option<Arc<BTreeSet<String>>>,
}

impl Caller {
    /// The caller of an open API: every scope, every queue.
    pub fn no_auth() -> Self {
        Self {
            name: ACTOR_NO_AUTH.into(),
            scopes: Arc::new([Scope::Admin]),
            queues: None,
        }
    }

    /// The sender of a hook request whose signature matched the hook's secret: it may
    /// enqueue that hook's job, on any queue the hook names.
    pub fn signed_hook(job: &str) -> Self {
        Self {
            name: format!("hook:{job}").into(),
            scopes: Arc::new([Scope::Enqueue]),
            queues: None,
        }
    }

    /// Whether this is the caller of an open API (no token exists).
    pub fn is_no_auth(&self) -> bool {
        &*self.name == ACTOR_NO_AUTH
    }

    fn of(token: &NewToken) -> Self {
        Self {
            name: token.name.as_str().into(),
            scopes: token.scopes.clone().into(),
            queues: token
                .queues
                .as_ref()
                .map(|q| Arc::new(q.iter().cloned().collect())),
        }
    }

    /// The name the audit record shows.
    pub fn actor(&self) -> &str {
        &self.name
    }

    /// The token's scopes.
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// The queues the token is limited to; `None`: every queue.
    pub fn queues(&self) -> Option<Vec<String>> {
        self.queues.as_ref().map(|q| q.iter().cloned().collect())
    }

    /// Whether the token is limited to some queues.
    pub fn limited(&self) -> bool {
        self.queues.is_some()
    }

    pub fn may_use(&self, queue: &str) -> bool {
        self.queues.as_ref().is_none_or(|q| q.contains(queue))
    }

    /// 403 unless the token may use `queue`.
    pub fn check_queue(&self, queue: &str) -> ApiResult<()> {
        if self.may_use(queue) {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "token {:?} may not use queue {queue:?}; it is limited to {}",
            self.name,
            self.queue_list()
        )))
    }

    /// 403 for a token limited to some queues: `what` spans every queue.
    pub fn check_unlimited(&self, what: &str) -> ApiResult<()> {
        if !self.limited() {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "token {:?} is limited to {}; {what} needs a token for every queue",
            self.name,
            self.queue_list()
        )))
    }

    /// 403 unless `filter` names a queue the token may use (always fine for tokens that are
    /// not limited).
    pub fn check_filter(&self, filter: Option<&str>) -> ApiResult<()> {
        match filter {
            Some(queue) => self.check_queue(queue),
            None if self.limited() => Err(ApiError::forbidden(format!(
                "token {:?} is limited to {}: pass one of them as queue=",
                self.name,
                self.queue_list()
            ))),
            None => Ok(()),
        }
    }

    /// The queues a listing with the `queue=` filter `filter` may show besides that filter:
    /// 403 when the filter names a queue the token may not use; without a filter, a limited
    /// token's own queues (`Some`), else every queue (`None`).
    pub fn listing_queues(&self, filter: Option<&str>) -> ApiResult<Option<Vec<String>>> {
        match filter {
            Some(queue) => self.check_queue(queue).map(|()| None),
            None => Ok(self.queues()),
        }
    }

    fn queue_list(&self) -> String {
        match &self.queues {
            None => "every queue".into(),
            Some(q) => format!(
                "queue{} {}",
                if q.len() == 1 { "" } else { "s" },
                q.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// The caller found by [`require`]. A route without it was registered without a scope; it
/// fails closed.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("this route checks no token; refused"))
    }
}

struct Known {
    /// [`hash_secret`] of the token, as bytes of hex to compare in constant time.
    hash: String,
    caller: Caller,
}

struct Snapshot {
    loaded: Instant,
    tokens: Arc<Vec<Known>>,
}

/// Finds callers by their bearer token; shared by every route of one router.
pub struct Authenticator {
    store: Arc<dyn Store>,
    config: AuthConfig,
    cache: RwLock<Option<Snapshot>>,
    /// One reload at a time; the others wait for it and use its result.
    reload: tokio::sync::Mutex<()>,
    /// How many times the token list was read from the store.
    reloads: std::sync::atomic::AtomicU64,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, config: AuthConfig) -> Self {
        Self {
            store,
            config,
            cache: RwLock::new(None),
            reload: tokio::sync::Mutex::new(()),
            reloads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many times the token list has been read from the store: about once per
    /// [`REFRESH`] while requests come, whatever their number.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cached tokens, if their read started at `since` or later.
    fn cached(&self, since: Instant) -> Option<Arc<Vec<Known>>> {
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .as_ref()
            .filter(|s| s.loaded >= since)
            .map(|s| s.tokens.clone())
    }

    /// The known tokens, read from the store at `since` or later: the cache, or a new read
    /// (one at a time; callers waiting for it use its result). A store that cannot be read
    /// fails the request (503): a stale list could let a revoked token in.
    async fn tokens(&self, since: Instant) -> ApiResult<Arc<Vec<Known>>> {
        if let Some(tokens) = self.cached(since) {
            return Ok(tokens);
        }
        let _reloading = self.reload.lock().await;
        if let Some(tokens) = self.cached(since) {
            return Ok(tokens);
        }
        let loaded = Instant::now();
        self.reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stored = self.store.token_list().await?;
        let mut known: Vec<Known> = stored
            .iter()
            .map(|t| Known {
                hash: t.hash.clone(),
                caller: Caller::of(&NewToken {
                    name: t.name.clone(),
                    hash: t.hash.clone(),
                    scopes: t.scopes.clone(),
                    queues: t.queues.clone(),
                }),
            })
            .collect();
        for declared in &self.config.declared {
            if !stored.iter().any(|t| t.name == declared.name) {
                known.push(Known {
                    hash: declared.hash.clone(),
                    caller: Caller::of(declared),
                });
            }
        }
        let tokens = Arc::new(known);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(Snapshot {
            loaded,
            tokens: tokens.clone(),
        });
        Ok(tokens)
    }

    /// Whether the API is open: no token exists and none is required (loopback mode).
    pub async fn is_open(&self) -> ApiResult<bool> {
        let arrived = Instant::now();
        let tokens = self
            .tokens(arrived.checked_sub(REFRESH).unwrap_or(arrived))
            .await?;
        Ok(tokens.is_empty() && !self.config.require_tokens)
    }

    /// The caller holding `secret`, if it is a valid token. A secret not in the cache makes
    /// the cache be read again unless that read started after the call, so a token works as
    /// soon as `hinter tokens create` has answered.
    pub async fn find_secret(&self, secret: &str) -> ApiResult<Option<Caller>> {
        let arrived = Instant::now();
        let hash = hash_secret(secret);
        let tokens = self
            .tokens(arrived.checked_sub(REFRESH).unwrap_or(arrived))
            .await?;
        if let Some(found) = find(&tokens, &hash) {
            return Ok(Some(found));
        }
        Ok(find(&self.tokens(arrived).await?, &hash))
    }

    /// The caller of a request that needs `scope`: 401 without a valid token, 403 without
    /// the scope. While no token exists and none is required, every request may call (as
    /// [`ACTOR_NO_AUTH`]), whatever it sends: the API is open to anyone who can reach it, so
    /// a token would add nothing.
    ///
    /// A token not in the cache makes the cache be read again unless that read started
    /// after the request arrived, so a token works as soon as `hinter tokens create` has
    /// answered. Unknown tokens therefore cost at most one store read at a time.
    pub async fn authenticate(&self, headers: &HeaderMap, scope: Scope) -> ApiResult<Caller> {
        self.identify(bearer(headers), scope, "the bearer token")
            .await
    }

    /// As [`Authenticator::authenticate`], for a request that may also come from the
    /// dashboard in a browser: without an `Authorization` header, the session cookie
    /// ([`SESSION_COOKIE`]) holds the token. A request that changes something (not `GET`,
    /// `HEAD`) and has no bearer header is refused (403 `csrf`) when it comes from another
    /// site ([`check_same_origin`]) and, when the cookie authenticates it, unless it
    /// carries the session's CSRF token in `X-CSRF-Token` ([`check_csrf`]). Bearer
    /// requests need neither: browsers never add that header by themselves.
    pub async fn authenticate_request(
        &self,
        method: &Method,
        headers: &HeaderMap,
        scope: Scope,
    ) -> ApiResult<Caller> {
        if headers.contains_key(header::AUTHORIZATION) {
            return self.authenticate(headers, scope).await;
        }
        let changes = !matches!(*method, Method::GET | Method::HEAD);
        if changes {
            check_same_origin(headers)?;
        }
        let Some(secret) = session_cookie(headers) else {
            return self.authenticate(headers, scope).await;
        };
        if changes {
            check_csrf(secret, headers)?;
        }
        self.identify(Ok(secret), scope, "the session's token (log in again)")
            .await
    }

    async fn identify(
        &self,
        secret: ApiResult<&str>,
        scope: Scope,
        what: &str,
    ) -> ApiResult<Caller> {
        if self.is_open().await? {
            return Ok(Caller::no_auth());
        }
        let known = self.find_secret(secret?).await?.ok_or_else(|| {
            ApiError::unauthorized(format!("{what} is not valid: unknown or revoked"))
        })?;
        if !known.scopes.iter().any(|held| held.covers(scope)) {
            return Err(ApiError::forbidden(format!(
                "token {:?} lacks the {scope} scope this route needs; it has {}",
                known.name,
                known
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(known)
    }
}

/// The cookie of a dashboard session: the token's secret, `HttpOnly; SameSite=Strict`.
pub const SESSION_COOKIE: &str = "hinter_session";

/// The header a cookie-authenticated request that changes something must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of the session whose token is `secret`: HMAC-SHA256 keyed with the
/// secret over a fixed label, in hex. Only who holds the secret can make it (the cookie is
/// `HttpOnly`, and another site cannot read the page's answers), it survives restarts and is
/// the same on every server of a store; revoking the token ends both.
pub fn csrf_token(secret: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let Ok(mut mac) = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(b"hinter dashboard csrf v1");
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 403 `csrf` unless `X-CSRF-Token` is the CSRF token of the session `secret`.
pub fn check_csrf(secret: &str, headers: &HeaderMap) -> ApiResult<()> {
    let expected = csrf_token(secret);
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(sent)
            if !expected.is_empty() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) =>
        {
            Ok(())
        }
        Some(_) => Err(ApiError::csrf(
            "the X-CSRF-Token header does not match this session; reload the dashboard",
        )),
        None => Err(ApiError::csrf(
            "a request authenticated by the session cookie must send the X-CSRF-Token header \
             (GET /ui/session gives it); refused as a possible cross-site request",
        )),
    }
}

/// 403 `csrf` for a request a browser sent on behalf of another site: `Sec-Fetch-Site`
/// other than `same-origin` or `none`, or else an `Origin` whose host is not the `Host`.
/// Requests with neither header (command-line clients) pass.
pub fn check_same_origin(headers: &HeaderMap) -> ApiResult<()> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("<binary>"));
    if let Some(site) = text("sec-fetch-site") {
        if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") {
            return Ok(());
        }
        return Err(ApiError::csrf(format!(
            "refused a cross-site request (Sec-Fetch-Site: {site}): \
             send a bearer token to call the API from elsewhere"
        )));
    }
    let Some(origin) = text("origin") else {
        return Ok(());
    };
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match (origin_host, text(header::HOST.as_str())) {
        (Some(from), Some(host)) if from.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(ApiError::csrf(format!(
            "refused a cross-site request (Origin: {origin}): \
             send a bearer token to call the API from elsewhere"
        ))),
    }
}

/// The secret in the session cookie, if the request has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// The caller whose token hashes to `hash`. Every known hash is compared, in constant time,
/// so the answer's timing says nothing about how close a guess came or which token matched.
fn find(tokens: &[Known], hash: &str) -> Option<Caller> {
    let mut found = None;
    for known in tokens {
        if bool::from(known.hash.as_bytes().ct_eq(hash.as_bytes())) {
            found = Some(known.caller.clone());
        }
    }
    found
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> ApiResult<&str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "this API needs a token: send Authorization: Bearer TOKEN \
             (hinter: --token or HINTER_TOKEN)",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer TOKEN`",
        )),
    }
}

/// The middleware in front of every route that needs `scope`: finds the [`Caller`] for the
/// handler, or answers 401/403.
pub async fn require(
    State((auth, scope)): State<(Arc<Authenticator>, Scope)>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth
        .authenticate_request(request.method(), request.headers(), scope)
        .await
    {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn same_origin_requests_pass_and_cross_site_ones_are_refused() {
        for ok in [
            headers(&[]),
            headers(&[("sec-fetch-site", "same-origin")]),
            headers(&[("sec-fetch-site", "none")]),
            headers(&[
                ("origin", "http://127.0.0.1:8080"),
                ("host", "127.0.0.1:8080"),
            ]),
            headers(&[("origin", "https://Jobs.example"), ("host", "jobs.example")]),
        ] {
            assert_eq!(check_same_origin(&ok), Ok(()), "{ok:?}");
        }
        for refused in [
            headers(&[("sec-fetch-site", "cross-site")]),
            headers(&[("sec-fetch-site", "same-site")]),
            headers(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "http://h"),
                ("host", "h"),
            ]),
            headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:8080"),
            ]),
            headers(&[("origin", "null"), ("host", "127.0.0.1:8080")]),
            headers(&[("origin", "http://127.0.0.1:8080")]),
        ] {
            let err = check_same_origin(&refused).expect_err("refused");
            assert_eq!(
                (err.status.as_u16(), err.code),
                (403, "csrf"),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn csrf_token_is_tied_to_the_session_secret() {
        let token = csrf_token("hnt_one");
        assert_eq!(token.len(), 64);
        assert_eq!(token, csrf_token("hnt_one"));
        assert_ne!(token, csrf_token("hnt_two"));
        assert_eq!(
            check_csrf("hnt_one", &headers(&[("x-csrf-token", &token)])),
            Ok(())
        );
        for sent in [
            headers(&[]),
            headers(&[("x-csrf-token", &csrf_token("hnt_two"))]),
        ] {
            let err = check_csrf("hnt_one", &sent).expect_err("refused");
            assert_eq!(err.code, "csrf");
            assert!(err.message.contains("X-CSRF-Token"), "{}", err.message);
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; hinter_session=hnt_x; b=2")]);
        assert_eq!(session_cookie(&h), Some("hnt_x"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "hinter_session=hnt_y")]);
        assert_eq!(session_cookie(&h), Some("hnt_y"));
        assert_eq!(
            session_cookie(&headers(&[("cookie", "hinter_session=")])),
            None
        );
        assert_eq!(
            session_cookie(&headers(&[("cookie", "xhinter_session=z")])),
            None
        );
    }
}
