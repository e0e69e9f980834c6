//! `POST /hooks/{job}`: an HTTP hook enqueues one job of that name with the request's JSON
//! body as its payload, and answers `202 Accepted` with `Location: /api/v1/jobs/{id}` (the
//! asynchronous request-reply pattern).
//!
//! Who may call: a token with the `enqueue` scope, as every enqueue; or, for senders that
//! cannot set an `Authorization` header (GitHub, Stripe-like webhooks), a per-hook secret
//! (`hinter serve --hook-secret JOB=ENV_VAR`): the request then carries an HMAC-SHA256 of
//! its raw body under that secret, in hex, in the configured header (default
//! `X-Hub-Signature-256`, GitHub's; a `sha256=` prefix is allowed), compared in constant time.
//! A hook with a secret and no signature needs a real token: the open API of a loopback
//! server without tokens does not let unsigned requests in. Anything else is 401 and creates
//! nothing.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hinter_core::JobSpec;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::auth::{Authenticator, Caller, Scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{non_empty, parse_query, read_body};
use crate::wire::Accepted;
use crate::{AppState, ServerConfig};

/// The hook route's path, in axum's syntax.
pub const HOOK_PATH: &str = "/hooks/{job}";
/// The signature header unless configured otherwise (GitHub's).
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Per-hook secrets and the header their signatures come in.
#[derive(Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// Job name → secret.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Lower case header name.
    pub signature_header: String,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            secrets: BTreeMap::new(),
            signature_header: DEFAULT_SIGNATURE_HEADER.into(),
        }
    }
}

impl std::fmt::Debug for HookConfig {
    // The secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookConfig")
            .field("hooks", &self.secrets.keys().collect::<Vec<_>>())
            .field("signature_header", &self.signature_header)
            .finish()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HookQuery {
    queue: Option<String>,
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `signature` (hex, maybe after `sha256=`) is the HMAC-SHA256 of `body` under
/// `secret`; compared in constant time.
pub fn signature_matches(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let hex = signature.trim();
    let hex = hex.strip_prefix("sha256=").unwrap_or(hex);
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The signature of `body` under `secret`, as senders compute it (`sha256=` + hex).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * bytes.len());
    out.push_str("sha256=");
    for b in bytes.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The middleware in front of the hook route (instead of `auth::require`): a matching
/// signature, or a token with the `enqueue` scope.
pub async fn require(
    State((auth, config)): State<(Arc<Authenticator>, Arc<ServerConfig>)>,
    request: Request,
    next: Next,
) -> Response {
    match check(&auth, &config, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn check(
    auth: &Authenticator,
    config: &ServerConfig,
    request: Request,
) -> ApiResult<Request> {
    let job = request
        .uri()
        .path()
        .strip_prefix("/hooks/")
        .unwrap_or_default()
        .to_string();
    let hooks = &config.hooks;
    let secret = hooks.secrets.get(&job);
    let signature = request
        .headers()
        .get(hooks.signature_header.as_str())
        .map(|v| v.to_str().unwrap_or("").to_string());
    match (secret, signature) {
        (Some(secret), Some(signature)) => {
            let (mut parts, body) = request.into_parts();
            let bytes = read_body(
                &parts.headers,
                body,
                config.max_job_bytes,
                config.body_timeout,
            )
            .await?;
            if !signature_matches(secret, &bytes, &signature) {
                return Err(ApiError::unauthorized(format!(
                    "the {} signature does not match the body under hook {job:?}'s secret",
                    hooks.signature_header
                )));
            }
            parts.extensions.insert(Caller::signed_hook(&job));
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        (Some(_), None) => {
            let caller = auth.authenticate(request.headers(), Scope::Enqueue).await?;
            if caller.is_no_auth() {
                return Err(ApiError::unauthorized(format!(
                    "hook {job:?} needs its {} signature (or a token)",
                    hooks.signature_header
                )));
            }
            with_caller(request, caller)
        }
        (None, _) => {
            let caller = auth.authenticate(request.headers(), Scope::Enqueue).await?;
            with_caller(request, caller)
        }
    }
}

fn with_caller(mut request: Request, caller: Caller) -> ApiResult<Request> {
    request.extensions_mut().insert(caller);
    Ok(request)
}

/// `POST /hooks/{job}[?queue=]`: any JSON body becomes the payload.
#[utoipa::path(
    post, path = "/hooks/{job}", tag = "hooks", operation_id = "hook",
    summary = "An HTTP hook: enqueue a job with the request's JSON body as its payload",
    description = "Callers: a token with the `enqueue` scope, or, for a hook given a secret (`--hook-secret JOB=ENV_VAR`), the HMAC-SHA256 of the raw body under it, in hex (a `sha256=` prefix is allowed), in the signature header (default `X-Hub-Signature-256`, `--hook-signature-header`).",
    params(
        ("job" = String, Path, description = "The job definition's name."),
        ("queue" = Option<String>, Query, description = "The queue; required for a token limited to some queues.")
    ),
    request_body(content = serde_json::Value, description = "Any JSON: the job's payload."),
    responses(
        (status = 202, description = "Enqueued; poll the job at `Location`.", body = crate::wire::Accepted, headers(("Location" = String, description = "`/api/v1/jobs/{id}` of the job."))),
        (status = 400, description = "`bad_request`: an unknown query parameter.", body = crate::wire::ErrorBody),
        (status = 401, description = "`unauthorized`: the signature does not match the body; a hook with a secret called without signature or token.", body = crate::wire::ErrorBody),
        (status = 403, description = "`forbidden`: the token may not use the queue.", body = crate::wire::ErrorBody),
        (status = 422, description = "`invalid_field`: a job name that is not valid, or a payload beyond the limits.", body = crate::wire::ErrorBody)
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    caller: Caller,
    Path(job): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let query: HookQuery = parse_query(&uri)?;
    let queue = non_empty(query.queue);
    caller.check_filter(queue.as_deref())?;
    let config = &state.config;
    let bytes: Bytes = read_body(&headers, body, config.max_job_bytes, config.body_timeout).await?;
    let payload: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::malformed_json(format!("the body is not valid JSON: {e}")))?;
    let mut spec = JobSpec::new(job, payload);
    spec.queue = queue;
    let now = state.clock.now();
    let new_job = state.definitions.resolve(spec, now)?;
    caller.check_queue(&new_job.queue)?;
    let inserted = state
        .store
        .job_insert_many(vec![new_job], now)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::unavailable("the store answered an insert with no job"))?;
    let id = inserted.job.id;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/v1/jobs/{id}"))],
        Json(Accepted {
            id,
            job: inserted.job,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_only_their_body_and_secret() {
        let body = br#"{"action":"opened"}"#;
        let signature = sign(b"s3cret", body);
        assert!(signature.starts_with("sha256="));
        assert!(signature_matches(b"s3cret", body, &signature));
        assert!(signature_matches(
            b"s3cret",
            body,
            &signature["sha256=".len()..]
        ));
        assert!(!signature_matches(b"other", body, &signature));
        assert!(!signature_matches(b"s3cret", b"{}", &signature));
        assert!(!signature_matches(b"s3cret", body, "sha256=zz"));
        assert!(!signature_matches(b"s3cret", body, ""));
    }
}
