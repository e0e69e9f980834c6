//! The `Idempotency-Key` header of enqueues: the key, whose it is (scope) and what request it
//! was used for (fingerprint). The store keeps the answer with the key in the insert's
//! transaction (`hinter_core::store::IdempotentInsert`).
//!
//! - **Scope**: the SHA-256 of the `Authorization` header's value (of nothing when absent), so
//!   one caller's keys never answer another's requests, whatever the credentials are. A caller
//!   that changes its token starts a new scope.
//! - **Fingerprint**: the SHA-256 of method, path and the body as canonical JSON (keys sorted,
//!   no insignificant whitespace; numbers as written), so a retry that re-encodes the same
//!   request matches and a different request does not.

use axum::http::{HeaderMap, HeaderName};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};

/// The request header.
pub const HEADER: HeaderName = HeaderName::from_static("idempotency-key");
/// Set (to `true`) on an answer that a key replayed.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Longest key.
pub const MAX_KEY_CHARS: usize = 255;

/// The request's key, if it has one: 1 to [`MAX_KEY_CHARS`] printable ASCII characters
/// (space to `~`), else 400 naming the header.
pub fn key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let mut values = headers.get_all(&HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "Idempotency-Key: given more than once; send one key",
        ));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > MAX_KEY_CHARS
        || !bytes.iter().all(|b| (0x20..=0x7e).contains(b))
    {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key: must be 1 to {MAX_KEY_CHARS} printable ASCII characters \
             (got {} bytes{})",
            bytes.len(),
            if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
                ""
            } else {
                " with characters outside space to '~'"
            }
        )));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// Whose key it is: the hex SHA-256 of the `Authorization` header (empty when absent).
pub fn scope(headers: &HeaderMap) -> String {
    let credentials = headers
        .get(axum::http::header::AUTHORIZATION)
        .map_or(&[][..], |v| v.as_bytes());
    hex(&Sha256::digest(credentials))
}

/// The hex SHA-256 of `method`, `path` and `body` (already parsed as valid JSON) in canonical
/// form.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> ApiResult<String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::malformed_json(format!("the body is not valid JSON: {e}")))?;
    let mut canonical = Vec::with_capacity(body.len());
    write_canonical(&value, &mut canonical)?;
    let mut hasher = Sha256::new();
    for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", &canonical] {
        hasher.update(part);
    }
    Ok(hex(&hasher.finalize()))
}

/// JSON with object keys sorted and no whitespace, whatever order the map type keeps.
fn write_canonical(value: &Value, out: &mut Vec<u8>) -> ApiResult<()> {
    let encode = |e: serde_json::Error| ApiError::malformed_json(format!("the body: {e}"));
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (name, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, name).map_err(encode)?;
                out.push(b':');
                write_canonical(item, out)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(encode)?,
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn canonical_bodies_share_a_fingerprint() {
        let a = fingerprint(
            "POST",
            "/api/v1/jobs",
            br#"{"job":"a","payload":{"x":1,"y":[1,2]}}"#,
        );
        let b = fingerprint(
            "POST",
            "/api/v1/jobs",
            b"{ \"payload\" : {\"y\": [1, 2], \"x\": 1},\n \"job\": \"a\" }",
        );
        assert_eq!(a.unwrap(), b.unwrap());
        let other_body = fingerprint("POST", "/api/v1/jobs", br#"{"job":"b"}"#).unwrap();
        let other_path = fingerprint("POST", "/api/v1/jobs/batch", br#"{"job":"a"}"#).unwrap();
        let first = fingerprint("POST", "/api/v1/jobs", br#"{"job":"a"}"#).unwrap();
        assert_ne!(first, other_body);
        assert_ne!(first, other_path);
        assert_eq!(first.len(), 64);
    }

    #[test]
    fn keys_are_bounded_printable_ascii() {
        let with = |v: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(HEADER, HeaderValue::from_bytes(v).unwrap());
            key(&h)
        };
        assert_eq!(key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(with(b"order 7/a~").unwrap().as_deref(), Some("order 7/a~"));
        assert_eq!(with(&[b'k'; 255]).unwrap().map(|k| k.len()), Some(255));
        for bad in [
            &b""[..],
            &[b'k'; 256][..],
            b"tab\there",
            "caf\u{e9}".as_bytes(),
        ] {
            let err = with(bad).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(
                err.message.starts_with("Idempotency-Key:"),
                "{}",
                err.message
            );
        }
        let mut twice = HeaderMap::new();
        twice.append(HEADER, HeaderValue::from_static("a"));
        twice.append(HEADER, HeaderValue::from_static("b"));
        assert!(key(&twice).unwrap_err().message.contains("more than once"));
    }

    #[test]
    fn scope_is_per_authorization() {
        let mut h = HeaderMap::new();
        let anonymous = scope(&h);
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t1"),
        );
        let t1 = scope(&h);
        assert_ne!(anonymous, t1);
        assert_eq!(anonymous.len(), 64);
        assert!(!t1.contains("t1"));
    }
}
