//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document, generated from the code.
//!
//! Each handler carries its `#[utoipa::path]` (path, parameters, body, its own answers); the
//! bodies' schemas are derived on the wire types (`hinter-wire`, and hinter-core's types
//! with its `openapi` feature). What every route shares is added here from the route table
//! ([`crate::routes`]), so it cannot drift from what the router does:
//!
//! - the security of each route from its [`Access`]: a bearer token, or the dashboard's
//!   session cookie (with `X-CSRF-Token` for requests that change something), or for the
//!   hook route its signature; none for open routes;
//! - the error answers every route of a kind can give: `401`/`403` behind a token, `400`
//!   `malformed_json`, `408`, `413` and `422` for routes that read a body, `503` for all
//!   but the health checks (the store is unavailable, or the server has too many
//!   connections).
//!
//! The input rules every route shares (name patterns of path and query parameters, duration
//! syntax, an empty query parameter as absent) and those tying body fields together are
//! stated by [`crate::input_rules`].
//!
//! The dashboard's routes (`/`, `/ui/…`) are left out: they serve the browser application
//! (HTML, scripts, a login form), not the API, and may change with it; the session they set
//! is documented as a security scheme, since API routes accept it. The test
//! `openapi_document_covers_every_route` checks that every other route of the table is in
//! the document and nothing else is.
//!
//! The document is built once, on first request, and holds nothing from the configuration
//! (no token, hook or queue names): it is served without a token, as `/healthz` is.

use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Components, OpenApi as Document, RefOr, Response as DocResponse};
use utoipa::openapi::{ContentBuilder, ResponseBuilder};
use utoipa::OpenApi;

use crate::auth::{Access, Scope, CSRF_HEADER, SESSION_COOKIE};
use crate::wire::ErrorBody;

/// The document's own path.
pub const PATH: &str = "/api/v1/openapi.json";

/// Route prefixes of the dashboard, which the document leaves out (see the module doc).
pub fn is_dashboard(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

const BEARER: &str = "bearer";
const SESSION: &str = "session_cookie";
const CSRF: &str = "csrf_token";
const HOOK_SIGNATURE: &str = "hook_signature";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hinter",
        description = "hinter's HTTP API: jobs, the worker lease protocol, queues, schedules, events and health (`docs/http-api.md`).\n\nEvery answer that is not a success is `{\"error\": {\"code\", \"message\"}}` (`ErrorBody`); the `code`s are listed in `ErrorCode`. Durations are text such as `500ms`, `30s`, `5m`, `2h`, `1d` (in request bodies also a number of seconds); times are RFC 3339. Request bodies are read as JSON whatever their `Content-Type`; unknown body fields are refused (422).\n\nWhile no token exists and none is required (a server on loopback), every route is open, whatever the request sends.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        crate::health::healthz,
        crate::health::readyz,
        document,
        crate::jobs::enqueue,
        crate::jobs::list,
        crate::jobs::enqueue_batch,
        crate::jobs::show,
        crate::jobs::cancel,
        crate::jobs::retry,
        crate::jobs::delete,
        crate::worker::heartbeat,
        crate::worker::complete,
        crate::worker::fail,
        crate::worker::release,
        crate::worker::outcomes,
        crate::output::report,
        crate::output::logs,
        crate::output::definitions,
        crate::worker::lease,
        crate::events::list,
        crate::queues::list,
        crate::stats::show,
        crate::queues::pause,
        crate::queues::resume,
        crate::queues::purge,
        crate::workers::list,
        crate::metrics::scrape,
        crate::workers::report,
        crate::workers::remove,
        crate::audit::list,
        crate::schedules::list,
        crate::schedules::create,
        crate::schedules::show,
        crate::schedules::replace,
        crate::schedules::delete,
        crate::schedules::pause,
        crate::schedules::resume,
        crate::schedules::occurrences,
        crate::hooks::receive,
    ),
    components(schemas(
        crate::wire::ErrorBody,
        crate::wire::ErrorCode,
        hinter_core::JobState,
        hinter_core::EventKind,
        hinter_core::JobEvent,
        hinter_core::openapi::DurationText,
        hinter_core::openapi::DurationInput,
    )),
    tags(
        (name = "health", description = "Liveness and readiness; open to everyone."),
        (name = "jobs", description = "Enqueue, read, list, cancel, retry, delete; logs and definitions."),
        (name = "worker protocol", description = "Lease, heartbeat, complete, fail, release, report: any language can work jobs over HTTP."),
        (name = "events", description = "The durable event log, as pages or Server-Sent Events."),
        (name = "queues", description = "Counts per state; pause, resume, purge."),
        (name = "schedules", description = "Cron and one-shot schedules."),
        (name = "workers", description = "The processes sharing the store."),
        (name = "audit", description = "The record of admin actions."),
        (name = "metrics", description = "Prometheus metrics."),
        (name = "hooks", description = "Enqueue from any HTTP sender."),
        (name = "meta", description = "This document."),
    )
)]
struct ApiDoc;

/// `GET /api/v1/openapi.json` (open, like `/healthz`).
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "meta", operation_id = "openapi",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The document.", body = Object))
)]
pub async fn document() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| {
        serde_json::to_string(&build()).unwrap_or_else(|e| {
            serde_json::json!({"error": {"code": "unavailable", "message": e.to_string()}})
                .to_string()
        })
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// The whole document: the handlers' paths, completed from the route table.
pub fn build() -> Document {
    let mut doc = ApiDoc::openapi();
    let components = doc.components.get_or_insert_with(Components::default);
    add_security_schemes(components);
    merge_job_summary(components);
    open_flattened_parts(components);
    for route in crate::routes() {
        if is_dashboard(route.path) {
            continue;
        }
        let Some(item) = doc.paths.paths.get_mut(route.path) else {
            continue;
        };
        let Some(operation) = operation_mut(item, &route.method) else {
            continue;
        };
        complete(operation, route.path, route.access, &route.method);
    }
    crate::input_rules::apply(&mut doc);
    doc
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::HEAD => item.head.as_mut(),
        Method::OPTIONS => item.options.as_mut(),
        _ => None,
    }
}

fn add_security_schemes(components: &mut Components) {
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "`Authorization: Bearer TOKEN`: a token made with `hinter tokens create` \
                     (`hnt_` and 64 hex digits), holding the route's scope (`enqueue`, `read`, \
                     `work`, or `admin`, which implies every other). 401 without a valid \
                     token, 403 without the scope or for a queue the token may not use.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        SESSION,
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            SESSION_COOKIE,
            "The dashboard's session (set by `POST /ui/login`, see docs/dashboard.md): \
             the token's secret in an `HttpOnly; SameSite=Strict` cookie, used when no \
             `Authorization` header is sent. A request that changes something must also \
             send `X-CSRF-Token`.",
        ))),
    );
    components.add_security_scheme(
        CSRF,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-CSRF-Token",
            "With the session cookie, on every request that is not GET or HEAD: the \
             session's CSRF token (given by `POST /ui/login` and `GET /ui/session`); else \
             403 `csrf`. Such a request from another site (`Sec-Fetch-Site`, or an `Origin` \
             other than the `Host`) is refused too.",
        ))),
    );
    components.add_security_scheme(
        HOOK_SIGNATURE,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Hub-Signature-256",
            "For a hook given a secret (`--hook-secret JOB=ENV_VAR`): `sha256=` and the hex \
             HMAC-SHA256 of the raw body under the secret. The header's name is \
             `--hook-signature-header` (this is the default).",
        ))),
    );
    debug_assert_eq!(CSRF_HEADER, "x-csrf-token");
}

/// `JobSummary` as the server writes it: the Rust type's fields, and the job's remaining
/// fields it does not read.
fn merge_job_summary(components: &mut Components) {
    use utoipa::openapi::schema::Schema;
    let more = hinter_wire::openapi::job_summary_more();
    let (Some(RefOr::T(Schema::Object(summary))), RefOr::T(Schema::Object(more))) =
        (components.schemas.get_mut("JobSummary"), more)
    else {
        return;
    };
    for (name, property) in more.properties {
        summary.properties.entry(name).or_insert(property);
    }
    for name in more.required {
        if !summary.required.contains(&name) {
            summary.required.push(name);
        }
    }
}

/// A type that refuses unknown fields (`additionalProperties: false`, e.g. `ScheduleSpec`)
/// and is flattened into an answer (`Schedule`) would, as an `allOf` member, refuse the
/// answer's other fields: such members are inlined without that restriction.
fn open_flattened_parts(components: &mut Components) {
    use utoipa::openapi::schema::Schema;
    let closed: std::collections::BTreeMap<String, Schema> = components
        .schemas
        .iter()
        .filter_map(|(name, schema)| match schema {
            RefOr::T(Schema::Object(object)) if object.additional_properties.is_some() => {
                let mut open = object.clone();
                open.additional_properties = None;
                Some((format!("#/components/schemas/{name}"), Schema::Object(open)))
            }
            _ => None,
        })
        .collect();
    for schema in components.schemas.values_mut() {
        let RefOr::T(Schema::AllOf(all_of)) = schema else {
            continue;
        };
        for item in &mut all_of.items {
            if let RefOr::Ref(reference) = item {
                if let Some(open) = closed.get(&reference.ref_location) {
                    *item = RefOr::T(open.clone());
                }
            }
        }
    }
}

/// Adds what the route table says of the route to its operation: security, and the error
/// answers every route of its kind can give.
fn complete(operation: &mut Operation, path: &str, access: Access, method: &Method) {
    optional_body(operation);
    let reads_body = operation.request_body.is_some();
    if let Access::Scope(scope, _) = access {
        let changes = !matches!(*method, Method::GET | Method::HEAD);
        let mut security = vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            if changes {
                SecurityRequirement::new(SESSION, Vec::<String>::new())
                    .add(CSRF, Vec::<String>::new())
            } else {
                SecurityRequirement::new(SESSION, Vec::<String>::new())
            },
        ];
        if path == crate::hooks::HOOK_PATH {
            security.push(SecurityRequirement::new(
                HOOK_SIGNATURE,
                Vec::<String>::new(),
            ));
        }
        operation.security = Some(security);
        let scope_name = scope_name(scope);
        add_error(
            operation,
            "401",
            &format!(
                "`unauthorized`: no token, one that is not valid (unknown, revoked), or an \
                 `Authorization` header that is not `Bearer TOKEN`; with \
                 `WWW-Authenticate: Bearer`. Needs a token with the `{scope_name}` scope."
            ),
        );
        add_error(
            operation,
            "403",
            &format!(
                "`forbidden`: the token lacks the `{scope_name}` scope. `csrf`: a request \
                 without an `Authorization` header that changes something, from another \
                 site, or with the session cookie but without its `X-CSRF-Token`."
            ),
        );
    }
    if reads_body {
        add_error(
            operation,
            "400",
            "`malformed_json`: the body is not JSON, or not UTF-8.",
        );
        add_error(
            operation,
            "408",
            "`request_timeout`: the body did not arrive whole within `--body-timeout` \
             (default 60s); the connection is closed.",
        );
        add_error(
            operation,
            "413",
            "`too_large`: the body is over the limit (default 1 MiB; a batch 64 MiB).",
        );
        add_error(
            operation,
            "422",
            "`invalid_field`: a field has the wrong type, is missing, unknown or out of \
             range; the message names its path. A body that is an array, not an object.",
        );
    }
    if !matches!(path, "/healthz" | "/readyz") {
        add_error(
            operation,
            "503",
            "`unavailable`: the store cannot be reached or written (nothing was changed). \
             `overloaded`: the server has `--max-connections` open.",
        );
    }
}

/// A body declared as `Option<T>` (the purge's) may be left out, not sent as `null`: its
/// schema is `T`, and the body is not required.
fn optional_body(operation: &mut Operation) {
    use utoipa::openapi::schema::{Schema, Type};
    use utoipa::openapi::Required;
    let Some(body) = operation.request_body.as_mut() else {
        return;
    };
    let mut optional = false;
    for content in body.content.values_mut() {
        let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
            continue;
        };
        let is_null = |item: &RefOr<Schema>| {
            matches!(item, RefOr::T(Schema::Object(o))
                if o.schema_type == utoipa::openapi::schema::SchemaType::Type(Type::Null))
        };
        let rest: Vec<RefOr<Schema>> = one_of
            .items
            .iter()
            .filter(|i| !is_null(i))
            .cloned()
            .collect();
        if rest.len() == 1 && rest.len() < one_of.items.len() {
            content.schema = rest.into_iter().next();
            optional = true;
        }
    }
    if optional {
        body.required = Some(Required::False);
    }
}

fn scope_name(scope: Scope) -> &'static str {
    scope.as_str()
}

/// Adds a `{"error": …}` answer with `status`, or adds `description` to the one the handler
/// declares.
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    match operation.responses.responses.get_mut(status) {
        Some(RefOr::T(existing)) => {
            existing.description = format!("{} {}", existing.description, description);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            operation
                .responses
                .responses
                .insert(status.to_string(), RefOr::T(error_response(description)));
        }
    }
}

fn error_response(description: &str) -> DocResponse {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    <ErrorBody as utoipa::ToSchema>::name(),
                ))))
                .build(),
        )
        .build()
}
