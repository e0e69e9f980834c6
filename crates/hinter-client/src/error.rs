//! What a call to the hinter server can end in besides success.

use serde::Deserialize;

/// An error from a [`crate::Client`] call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status. `code` and `message` come from the
    /// `{"error": {"code", "message"}}` body (see `docs/http-api.md`); when the body has another
    /// shape, `code` is `http_<status>` and `message` is the start of the body.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },

    /// The server could not be reached, or the connection broke before a full answer arrived.
    /// `url` is the server's base URL, `reason` the underlying cause.
    #[error("cannot reach the hinter server at {url}: {reason}")]
    Transport {
        url: String,
        reason: String,
        /// The request timed out (as opposed to: connection refused, reset, DNS failure…).
        timed_out: bool,
        /// No connection could be made (refused, unreachable, unknown host), as opposed to
        /// one that broke or stalled after it was made.
        connect_failed: bool,
    },

    /// No TLS session could be made with an `https://` server: most often its certificate
    /// is not trusted (give its CA with [`crate::ClientBuilder::ca_file`]) or is for another
    /// host name. Trying again does not help.
    #[error("TLS with the hinter server at {url} failed: {reason}")]
    Tls {
        url: String,
        /// What was wrong, for code that acts on it.
        problem: TlsProblem,
        /// What was wrong in words, with rustls' own description.
        reason: String,
    },

    /// A CA certificate given to [`crate::ClientBuilder`] cannot be used. `origin` is its
    /// file, or `(PEM text)`.
    #[error("cannot use the CA certificate {origin}: {message}")]
    InvalidCaCertificate { origin: String, message: String },

    /// The server answered with a success status but a body that is not what the API promises.
    #[error("unexpected answer from {url} (HTTP {status}): {message}")]
    Decode {
        url: String,
        status: u16,
        message: String,
    },

    /// The server URL given to [`crate::Client::new`] is unusable.
    #[error("invalid server URL {url:?}: {message}")]
    InvalidUrl { url: String, message: String },

    /// The request could not be encoded as JSON (a map with non-string keys, say).
    #[error("cannot encode the request: {message}")]
    InvalidRequest { message: String },
}

/// Why a TLS session with the server could not be made ([`Error::Tls`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsProblem {
    /// The server's certificate does not chain up to a trusted CA.
    UntrustedCertificate,
    /// The server's certificate is not for the host name of the server URL.
    WrongHostName,
    /// The certificate has expired or is otherwise refused, or the handshake failed.
    Other,
}

impl Error {
    /// The HTTP status of an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The machine code of an [`Error::Api`] (`not_found`, `conflict`, `stale_lease`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// 404: no such job (or route).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// 409 `conflict` or `stale_lease`.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// 409 `stale_lease`: the lease token is no longer current; nothing changed.
    pub fn is_stale_lease(&self) -> bool {
        self.code() == Some("stale_lease")
    }

    /// The server is unreachable or answered 503: trying again later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Transport { .. }) || self.status() == Some(503)
    }

    /// Builds an [`Error::Api`] from a status and an error body of any shape.
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        #[derive(Deserialize)]
        struct Envelope {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: String,
            message: String,
        }
        /// `/readyz` answers 503 with `{"status": "not_ready", "reason": "…"}`.
        #[derive(Deserialize)]
        struct Status {
            status: String,
            #[serde(default)]
            reason: Option<String>,
        }

        if let Ok(Envelope { error }) = serde_json::from_slice::<Envelope>(body) {
            return Error::Api {
                status,
                code: error.code,
                message: error.message,
            };
        }
        if let Ok(s) = serde_json::from_slice::<Status>(body) {
            return Error::Api {
                status,
                message: s.reason.unwrap_or_else(|| s.status.clone()),
                code: s.status,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            default_reason(status).to_string()
        } else {
            truncate(text, 300)
        };
        Error::Api {
            status,
            code: format!("http_{status}"),
            message,
        }
    }
}

fn default_reason(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorized: a valid token is required (--token / HINTER_TOKEN)",
        403 => "forbidden: the token may not do this",
        404 => "not found",
        405 => "method not allowed",
        409 => "conflict",
        413 => "request body too large",
        422 => "invalid request",
        429 => "too many requests",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "request failed",
    }
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_error_envelope() {
        let err = Error::from_response(
            422,
            br#"{"error": {"code": "invalid_field", "message": "jobs[3].priority: out of range"}}"#,
        );
        assert_eq!(
            err,
            Error::Api {
                status: 422,
                code: "invalid_field".into(),
                message: "jobs[3].priority: out of range".into()
            }
        );
        assert_eq!(err.code(), Some("invalid_field"));
        assert_eq!(
            err.to_string(),
            "jobs[3].priority: out of range (HTTP 422, invalid_field)"
        );
    }

    #[test]
    fn stale_lease_is_a_conflict() {
        let err = Error::from_response(
            409,
            br#"{"error":{"code":"stale_lease","message":"lease is stale"}}"#,
        );
        assert!(err.is_conflict() && err.is_stale_lease() && !err.is_not_found());
    }

    #[test]
    fn readyz_body_becomes_an_api_error() {
        let err = Error::from_response(503, br#"{"status":"not_ready","reason":"store down"}"#);
        assert_eq!(err.code(), Some("not_ready"));
        assert!(err.is_unavailable());
        assert!(err.to_string().contains("store down"));
    }

    #[test]
    fn other_bodies_fall_back_to_the_status() {
        let err = Error::from_response(502, b"<html>Bad Gateway</html>");
        assert_eq!(err.code(), Some("http_502"));
        assert!(err.to_string().contains("Bad Gateway"));
        let err = Error::from_response(401, b"");
        assert!(err.to_string().contains("unauthorized"), "{err}");
        let long = "x".repeat(1000);
        let err = Error::from_response(500, long.as_bytes());
        assert!(err.to_string().len() < 400);
    }

    #[test]
    fn transport_errors_name_the_server() {
        let err = Error::Transport {
            url: "http://127.0.0.1:7433".into(),
            reason: "connection refused".into(),
            timed_out: false,
            connect_failed: true,
        };
        assert!(err.is_unavailable());
        assert_eq!(
            err.to_string(),
            "cannot reach the hinter server at http://127.0.0.1:7433: connection refused"
        );
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("äöü", 2), "äö…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
