//! The one error shape of the API: `{"error": {"code": …, "message": …}}` with a fitting status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use hinter_core::{FieldError, StoreError};

use crate::wire::{ErrorBody, ErrorCode, ErrorDetail};

/// An error answer: HTTP status, machine-readable code and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.as_str(),
            message: message.into(),
        }
    }

    /// 400: the body is not JSON.
    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::MalformedJson, message)
    }

    /// 400: a query or path parameter is wrong; the message names it.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// 422: a body field is wrong; the message names its path.
    pub fn invalid_field(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidField,
            message,
        )
    }

    /// 422: the `Idempotency-Key` was used before for a different request.
    pub fn idempotency_key_reused(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::IdempotencyKeyReused,
            message,
        )
    }

    /// 401: no token, or one that is not valid (unknown, revoked); answered with
    /// `WWW-Authenticate: Bearer`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 403: the token lacks the scope, or may not use the queue.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 403 `csrf`: a browser request that may come from another site (no CSRF token, or
    /// another origin).
    pub fn csrf(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Csrf, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::MethodNotAllowed,
            message,
        )
    }

    /// 409: the lease token is not current.
    pub fn stale_lease(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::StaleLease, message)
    }

    /// 409: the job's state does not allow the operation.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }

    /// 413: the body is over the limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge, message)
    }

    /// 408: the request body did not arrive in time.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            message,
        )
    }

    /// 503: the server has too many open connections to serve this one.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Overloaded,
            message,
        )
    }

    /// 503: the store cannot be reached or written.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            message,
        )
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::invalid_field(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => Self::not_found(format!("no job with id {id}")),
            StoreError::Unknown(message) => Self::not_found(message),
            StoreError::StaleLease(_) => Self::stale_lease(e.to_string()),
            StoreError::Invalid(field_error) => field_error.into(),
            StoreError::Conflict(message) => Self::conflict(message),
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "store unavailable");
                Self::unavailable("the store is unavailable; nothing was changed, try again later")
            }
            StoreError::Storage(cause) => {
                // The store logs the cause once; one line per refused request would flood.
                tracing::debug!(error = %cause, "store cannot write");
                Self::unavailable(format!(
                    "the store cannot write: {cause}; nothing was changed, try again once it is fixed"
                ))
            }
            StoreError::Corrupt(detail) => {
                tracing::error!(error = %detail, "store returned unreadable data");
                Self::unavailable("the store returned data it could not read; see the server log")
            }
        }
    }
}

impl ApiError {
    /// The `error` of its answer's body: code and message (also one item's error in a
    /// batch answer).
    pub fn detail(self) -> ErrorDetail {
        ErrorDetail {
            code: std::borrow::Cow::Borrowed(self.code),
            message: self.message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let body = ErrorBody {
            error: self.detail(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_503_and_name_their_cause() {
        let e = ApiError::from(StoreError::Storage(
            "disk full (database or disk is full)".into(),
        ));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert!(e.message.contains("disk full"), "{}", e.message);
        assert!(e.message.contains("nothing was changed"), "{}", e.message);
    }
}
