//! Reading requests ourselves, so every rejection has the API's error shape and names the
//! offending field: body size limits, JSON syntax vs. field errors, query strings, job ids.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Uri};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::error::Category;
use std::time::Duration;
use uuid::Uuid;

use crate::error::ApiError;

/// Most bytes read and thrown away after a body is refused as too large.
const DRAIN_CAP: u64 = 64 * 1024 * 1024;
/// Longest time spent throwing a refused body away.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the whole body within `timeout` (else 408 `request_timeout`, so a body trickling
/// in byte by byte cannot hold the request for ever), refusing more than `limit` bytes with
/// 413.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    tokio::time::timeout(timeout, read_body_untimed(headers, body, limit))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::request_timeout(format!(
                "the request body did not arrive within {}",
                hinter_core::format_duration(timeout)
            )))
        })
}

/// [`read_body`] without its time limit.
///
/// A refused body is still read (and thrown away, up to [`DRAIN_CAP`] bytes and
/// [`DRAIN_TIME`]) before answering: a server that closes a connection with unread request
/// data resets it, and many clients then report the reset instead of the 413 they were sent.
async fn read_body_untimed(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || ApiError::too_large(format!("the body is over the limit of {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if declared.is_none_or(|n| n <= limit as u64) {
        let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0) as usize);
        let mut over = false;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|e| ApiError::malformed_json(format!("could not read the body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    over = true;
                    break;
                }
                buf.extend_from_slice(&data);
            }
        }
        if !over {
            return Ok(Bytes::from(buf));
        }
    }
    if declared.is_none_or(|n| n <= DRAIN_CAP) {
        let drain = async {
            let mut drained = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    drained += data.len() as u64;
                    if drained > DRAIN_CAP {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
    Err(too_large())
}

/// The bytes of a body of a batch's size at most ([`crate::ServerConfig::max_batch_bytes`]):
/// a batch enqueue, outcomes, a lease carrying outcomes. Kept as bytes so the items can be
/// read raw (each size-checked, errors naming its index).
pub struct BatchBody(pub Bytes);

impl FromRequest<crate::AppState> for BatchBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &crate::AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let config = &state.config;
        read_body(
            &parts.headers,
            body,
            config.max_batch_bytes,
            config.body_timeout,
        )
        .await
        .map(BatchBody)
    }
}

/// A JSON body of one job's size at most ([`crate::ServerConfig::max_job_bytes`]), parsed
/// into `T` with [`read_body`] and [`parse_json`]'s errors.
pub struct JobBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<crate::AppState> for JobBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &crate::AppState) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let config = &state.config;
        let bytes = read_body(
            &parts.headers,
            body,
            config.max_job_bytes,
            config.body_timeout,
        )
        .await?;
        parse_json(&bytes, None).map(JobBody)
    }
}

/// Parses a JSON body into `T`. Syntax errors are 400 `malformed_json`; wrong, missing or
/// unknown fields are 422 `invalid_field` naming the field path, prefixed with `prefix`
/// (e.g. `jobs[3]`) when given.
pub fn parse_json<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    prefix: Option<&str>,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) && prefix.is_none() {
        return Err(ApiError::malformed_json(
            "the body is empty; expected a JSON object",
        ));
    }
    // Every body is an object; serde would also accept a struct written as an array.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(json_error(&e, None));
        }
        let what = prefix.map_or_else(|| "the body".to_string(), str::to_string);
        return Err(ApiError::invalid_field(format!(
            "{what}: expected a JSON object, not an array"
        )));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = field_path(prefix, &e.path().to_string());
        json_error(e.inner(), path)
    })?;
    de.end().map_err(|e| json_error(&e, None))?;
    Ok(value)
}

fn field_path(prefix: Option<&str>, path: &str) -> Option<String> {
    match (prefix, path) {
        (None, ".") => None,
        (Some(p), ".") => Some(p.to_string()),
        (None, path) => Some(path.to_string()),
        (Some(p), path) if path.starts_with('[') => Some(format!("{p}{path}")),
        (Some(p), path) => Some(format!("{p}.{path}")),
    }
}

fn json_error(e: &serde_json::Error, path: Option<String>) -> ApiError {
    match e.classify() {
        Category::Data => {
            // serde_json appends " at line L column C"; the field path says more.
            let text = e.to_string();
            let text = match text.rfind(" at line ") {
                Some(i) if e.line() > 0 => text[..i].to_string(),
                _ => text,
            };
            match path {
                Some(path) => ApiError::invalid_field(format!("{path}: {text}")),
                None => ApiError::invalid_field(text),
            }
        }
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::malformed_json(format!("the body is not valid JSON: {e}"))
        }
    }
}

/// A query parameter's value; an empty one (`?limit=`) counts as absent.
pub fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// A `limit` parameter: `default` when absent, else a number from 1 to `max`.
pub fn parse_limit(value: Option<String>, default: u32, max: u32) -> Result<u32, ApiError> {
    match non_empty(value) {
        None => Ok(default),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("limit: {s:?} is not a number from 1 to {max}"))
            }),
    }
}

/// A `wait` parameter (`30s`): zero when absent, at most `max`.
pub fn parse_wait(
    value: Option<String>,
    max: std::time::Duration,
) -> Result<std::time::Duration, ApiError> {
    match non_empty(value) {
        None => Ok(std::time::Duration::ZERO),
        Some(raw) => Ok(hinter_core::parse_duration(&raw)
            .map_err(|e| ApiError::bad_request(format!("wait: {e}")))?
            .min(max)),
    }
}

/// A filter on a queue or job name, checked like the names it matches, so both backends
/// answer the same (PostgreSQL cannot even compare a NUL character).
pub fn name_filter(param: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let value = non_empty(value);
    if let Some(name) = &value {
        hinter_core::definition::validate_name(param, name)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(value)
}

/// Parses the query string into `T`. Every query type of the API denies unknown fields, so
/// an unknown parameter is 400 on every route that reads parameters (routes that take none
/// do not read the query string).
pub fn parse_query<T: DeserializeOwned + Default>(uri: &Uri) -> Result<T, ApiError> {
    if uri.query().is_none_or(str::is_empty) {
        return Ok(T::default());
    }
    Query::<T>::try_from_uri(uri)
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(format!("bad query string: {}", e.body_text())))
}

/// The `{id}` of a job route; one that is not a UUID names no job (404).
#[derive(Debug, Clone, Copy)]
pub struct JobId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::not_found(format!("bad job id in path: {}", e.body_text())))?;
        Uuid::parse_str(&raw)
            .map(JobId)
            .map_err(|_| ApiError::not_found(format!("no job with id {raw:?}")))
    }
}

/// The `{name}` of a queue route, checked like a queue name in a job (400 if invalid).
#[derive(Debug, Clone)]
pub struct QueueName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for QueueName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("bad queue name in path: {}", e.body_text()))
            })?;
        hinter_core::definition::validate_name("queue name", &raw)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(QueueName(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{LeaseRequest, RawBatchRequest};
    use hinter_core::JobSpec;

    fn err<T: std::fmt::Debug>(r: Result<T, ApiError>) -> (u16, &'static str, String) {
        let e = r.expect_err("should fail");
        (e.status.as_u16(), e.code, e.message)
    }

    #[test]
    fn syntax_errors_are_malformed_json() {
        for body in [
            "",
            "  ",
            "{",
            "[1,",
            "{\"job\": }",
            "nope",
            "{\"job\":\"a\"} x",
            "\u{ff}",
        ] {
            let (status, code, _) = err(parse_json::<JobSpec>(body.as_bytes(), None));
            assert_eq!((status, code), (400, "malformed_json"), "{body:?}");
        }
        let (status, code, _) = err(parse_json::<JobSpec>(b"{\"job\": \"\xff\"}", None));
        assert_eq!((status, code), (400, "malformed_json"));
    }

    #[test]
    fn field_errors_name_the_field() {
        let cases = [
            (
                r#"{"job": "a", "priority": "high"}"#,
                "priority: invalid type",
            ),
            (
                r#"{"job": "a", "colour": 1}"#,
                "colour: unknown field `colour`",
            ),
            (r#"{"payload": 1}"#, "missing field `job`"),
            (
                r#"{"job": "a", "delay": "soon"}"#,
                "delay: invalid duration",
            ),
            (
                r#"{"job": "a", "max_attempts": -1}"#,
                "max_attempts: invalid value",
            ),
            ("[]", "the body: expected a JSON object"),
            (r#"["a"]"#, "the body: expected a JSON object"),
            ("5", "invalid type"),
        ];
        for (body, expected) in cases {
            let (status, code, message) = err(parse_json::<JobSpec>(body.as_bytes(), None));
            assert_eq!((status, code), (422, "invalid_field"), "{body}");
            assert!(message.starts_with(expected), "{body}: {message}");
            assert!(!message.contains("line 1"), "{message}");
        }
    }

    #[test]
    fn prefixed_paths() {
        let (_, _, message) = err(parse_json::<JobSpec>(
            br#"{"job": "a", "priority": "x"}"#,
            Some("jobs[3]"),
        ));
        assert!(message.starts_with("jobs[3].priority: "), "{message}");
        let (_, _, message) = err(parse_json::<JobSpec>(br#"{"jobb": "a"}"#, Some("jobs[0]")));
        assert!(
            message.starts_with("jobs[0].jobb: unknown field"),
            "{message}"
        );
        let (_, _, message) = err(parse_json::<LeaseRequest>(
            br#"{"worker_id": "w", "queues": ["a", 5]}"#,
            None,
        ));
        assert!(message.starts_with("queues[1]: invalid type"), "{message}");
        let (_, _, message) = err(parse_json::<RawBatchRequest<'_>>(br#"{"jobs": 5}"#, None));
        assert!(message.starts_with("jobs: invalid type"), "{message}");
    }
}
