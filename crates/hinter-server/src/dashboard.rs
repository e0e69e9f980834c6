//! The web dashboard (`docs/dashboard.md`): one page at `/` and its assets under `/ui/`,
//! embedded in the binary (plain HTML, CSS and JavaScript, no build step), plus the session
//! routes of a browser: `POST /ui/login`, `POST /ui/logout`, `GET /ui/session`.
//!
//! The page holds no data: its script reads and changes everything through the JSON API,
//! authenticated by the session cookie ([`auth::SESSION_COOKIE`], the token's secret,
//! `HttpOnly; SameSite=Strict`) and, for requests that change something, the session's CSRF
//! token ([`auth::csrf_token`]); [`auth::Authenticator::authenticate_request`] checks both.

use axum::body::Bytes;
use axum::extract::{Extension, Path};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use crate::auth::{self, Authenticator, Caller};
use crate::error::{ApiError, ApiResult};

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");

/// The page's policy: scripts, styles, images and connections from this server only, no
/// inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   object-src 'none'";

/// Put on the router of a server that serves HTTPS: the session cookie is then `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

fn page_headers(
    content_type: &'static str,
    cache: &'static str,
) -> [(header::HeaderName, HeaderValue); 6] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

/// `GET /`: the page.
pub async fn index() -> Response {
    (page_headers("text/html; charset=utf-8", "no-cache"), INDEX).into_response()
}

/// A strong validator of an embedded asset: its length and a hash of its text.
fn etag(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{}-{hex}\"", text.len())
}

/// `GET /ui/{file}`: `app.js` or `app.css`, revalidated by `ETag` on each load (they change
/// with the binary).
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let (text, content_type) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => {
            return ApiError::not_found(format!(
                "no dashboard file {file:?}; there are app.js and app.css"
            ))
            .into_response()
        }
    };
    let tag = etag(text);
    let headers_out = page_headers(content_type, "no-cache");
    let etag_header = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\""));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            headers_out,
            [(header::ETAG, etag_header)],
        )
            .into_response();
    }
    (headers_out, [(header::ETAG, etag_header)], text).into_response()
}

/// What the page is told about its caller: whether the API is open, the token's name,
/// scopes and queues, and the CSRF token of its session.
fn describe(open: bool, caller: Option<&Caller>, csrf: Option<String>) -> Value {
    match caller {
        Some(caller) if !open => json!({
            "open": false,
            "authenticated": true,
            "name": caller.actor(),
            "scopes": caller.scopes().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            "queues": caller.queues(),
            "csrf": csrf,
        }),
        _ if open => json!({
            "open": true,
            "authenticated": true,
            "name": Caller::no_auth().actor(),
            "scopes": ["admin"],
            "queues": null,
            "csrf": csrf,
        }),
        _ => json!({"open": false, "authenticated": false, "csrf": null}),
    }
}

/// `GET /ui/session`: who the page's session (cookie, or a bearer header) is.
pub async fn session(
    Extension(auth): Extension<Arc<Authenticator>>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    let open = auth.is_open().await?;
    let bearer = headers.contains_key(header::AUTHORIZATION);
    let cookie = if bearer {
        None
    } else {
        auth::session_cookie(&headers)
    };
    let caller = match cookie {
        _ if open => None,
        // A bearer token for a page would have to have `read` to show anything.
        None if bearer => auth.authenticate(&headers, auth::Scope::Read).await.ok(),
        None => None,
        Some(secret) => auth.find_secret(secret).await?,
    };
    let csrf = cookie
        .filter(|_| open || caller.is_some())
        .map(auth::csrf_token);
    Ok(Json(describe(open, caller.as_ref(), csrf)))
}

/// The `token` field of an `application/x-www-form-urlencoded` body.
fn form_token(body: &[u8]) -> ApiResult<String> {
    #[derive(serde::Deserialize)]
    struct Form {
        token: Option<String>,
    }
    let form: Form = serde_urlencoded::from_bytes(body)
        .map_err(|e| ApiError::bad_request(format!("the login form is not readable: {e}")))?;
    match form.token.map(|t| t.trim().to_string()) {
        Some(token) if !token.is_empty() => Ok(token),
        _ => Err(ApiError::invalid_field(
            "token: give the secret of a token (hinter tokens create)",
        )),
    }
}

fn cookie(value: &str, max_age: Option<u64>, tls: bool) -> HeaderValue {
    let mut text = format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/",
        auth::SESSION_COOKIE
    );
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if tls {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("hinter_session=; Path=/"))
}

/// `POST /ui/login` with form field `token`: checks the token as the API would and keeps it
/// in the session cookie; answers as `GET /ui/session`.
pub async fn login(
    Extension(auth): Extension<Arc<Authenticator>>,
    tls: Option<Extension<OverTls>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    auth::check_same_origin(&headers)?;
    let secret = form_token(&body)?;
    if secret
        .bytes()
        .any(|b| !b.is_ascii_graphic() || b == b';' || b == b',' || b == b'"')
    {
        return Err(ApiError::unauthorized(
            "the token is not valid: unknown or revoked",
        ));
    }
    let open = auth.is_open().await?;
    let Some(caller) = auth.find_secret(&secret).await? else {
        return Err(ApiError::unauthorized(
            "the token is not valid: unknown or revoked",
        ));
    };
    let answer = describe(open, Some(&caller), Some(auth::csrf_token(&secret)));
    Ok((
        [(header::SET_COOKIE, cookie(&secret, None, tls.is_some()))],
        Json(answer),
    )
        .into_response())
}

/// `POST /ui/logout`: forgets the session cookie.
pub async fn logout(tls: Option<Extension<OverTls>>, headers: HeaderMap) -> ApiResult<Response> {
    auth::check_same_origin(&headers)?;
    Ok((
        [(header::SET_COOKIE, cookie("", Some(0), tls.is_some()))],
        Json(json!({"logged_out": true})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_its_assets_and_no_inline_script() {
        assert!(INDEX.contains("/ui/app.js") && INDEX.contains("/ui/app.css"));
        assert!(!INDEX.contains("<script>"), "inline script breaks the CSP");
        for handler in ["onclick=", "onload=", "onsubmit=", "onchange=", "style="] {
            assert!(!INDEX.contains(handler), "inline {handler} breaks the CSP");
        }
        assert!(CSP.starts_with("default-src 'self'"));
    }

    #[test]
    fn the_login_form_needs_a_token() {
        assert_eq!(form_token(b"token=hnt_abc").expect("token"), "hnt_abc");
        assert_eq!(
            form_token(b"token=hnt%5Fabc&x=1").expect("token"),
            "hnt_abc"
        );
        assert_eq!(form_token(b"").expect_err("none").status.as_u16(), 422);
        assert_eq!(
            form_token(b"token=+").expect_err("blank").status.as_u16(),
            422
        );
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let c = cookie("hnt_x", None, false);
        assert_eq!(c, "hinter_session=hnt_x; HttpOnly; SameSite=Strict; Path=/");
        let c = cookie("", Some(0), true);
        assert_eq!(
            c,
            "hinter_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
        );
    }
}
