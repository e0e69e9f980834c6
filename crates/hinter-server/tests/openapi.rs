//! `GET /api/v1/openapi.json` over real HTTP on loopback, against a real SQLite store: the
//! document is OpenAPI 3.1, covers exactly the routes of `hinter_server::routes()` (but the
//! dashboard's), every `$ref` resolves, every route's security and shared error answers
//! follow its access, and real answers have the fields their schemas say.

use hinter_core::{Store, SystemClock};
use hinter_server::{routes, Access, AppState, AuthConfig, ConnLimits, ServerConfig};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

struct Server {
    base: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(auth: AuthConfig) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
            .await
            .expect("open store"),
    );
    let state = AppState {
        store: store.clone() as Arc<dyn Store>,
        cluster: store as Arc<dyn hinter_core::Cluster>,
        clock: Arc::new(SystemClock),
        definitions: Default::default(),
        config: Arc::new(ServerConfig {
            auth,
            ..ServerConfig::default()
        }),
        ready: Arc::new(AtomicBool::new(true)),
        metrics: hinter_server::Metrics::new(),
        hub: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(hinter_server::serve(
        listener,
        state,
        ConnLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        base,
        http: reqwest::Client::new(),
        stop: Some(stop),
        _dir: dir,
    }
}

impl Server {
    async fn get(&self, path: &str) -> (u16, Option<String>, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.json().await.expect("JSON body");
        (status, content_type, body)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    async fn document(&self) -> Value {
        let (status, content_type, doc) = self.get("/api/v1/openapi.json").await;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        doc
    }
}

const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// Every (method, path) the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Every `$ref` in `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                if key == "$ref" {
                    if let Some(target) = item.as_str() {
                        out.push((at.to_string(), target.to_string()));
                    }
                }
                refs(item, &format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refs(item, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The schema `#/components/schemas/NAME` or an inline one, with `allOf` merged: its
/// properties and required fields.
fn shape(doc: &Value, schema: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    if let Some(target) = schema["$ref"].as_str() {
        let pointer = target.trim_start_matches('#');
        return shape(doc, doc.pointer(pointer).expect("ref resolves"));
    }
    let mut properties: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let mut required: BTreeSet<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (p, r) = shape(doc, part);
        properties.extend(p);
        required.extend(r);
    }
    (properties, required)
}

/// `value` has every field `schema` requires, and only fields it names.
fn check_fields(doc: &Value, name: &str, value: &Value) {
    let (properties, required) = shape(
        doc,
        &json!({"$ref": format!("#/components/schemas/{name}")}),
    );
    let keys: BTreeSet<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("{name}: not an object: {value}"))
        .keys()
        .cloned()
        .collect();
    let missing: Vec<_> = required.difference(&keys).collect();
    let unknown: Vec<_> = keys.difference(&properties).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "{name}: the answer lacks required {missing:?} and has undocumented {unknown:?}: {value}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_every_route() {
    // A server that asks every other route for a token still serves its description.
    let server = start(AuthConfig {
        require_tokens: true,
        ..AuthConfig::default()
    })
    .await;
    let doc = server.document().await;
    if let Some(out) = std::env::var_os("HINTER_OPENAPI_OUT") {
        let text = serde_json::to_string_pretty(&doc).expect("JSON");
        std::fs::write(out, text).expect("write the document");
    }
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1"), "{version}");

    let table = routes();
    let documented = operations(&doc);
    let api: BTreeSet<(String, String)> = table
        .iter()
        .filter(|r| !hinter_server::openapi::is_dashboard(r.path))
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    let undocumented: Vec<_> = api.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes without `#[utoipa::path]` in the document (add it, and list the handler in \
         openapi.rs): {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&api).collect();
    assert!(unknown.is_empty(), "documented but not routed: {unknown:?}");
    assert!(
        table
            .iter()
            .any(|r| hinter_server::openapi::is_dashboard(r.path)),
        "the dashboard's routes are left out on purpose"
    );

    let mut all = Vec::new();
    refs(&doc, "#", &mut all);
    assert!(all.len() > 50, "{} refs", all.len());
    for (at, target) in &all {
        let pointer = target
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: external $ref {target}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: $ref {target} resolves to nothing"
        );
    }

    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session_cookie"]["in"], "cookie");
    assert_eq!(schemes["session_cookie"]["name"], "hinter_session");
    assert_eq!(schemes["csrf_token"]["in"], "header");
    for route in table
        .iter()
        .filter(|r| !hinter_server::openapi::is_dashboard(r.path))
    {
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        let label = format!("{} {}", route.method, route.path);
        let responses = op["responses"].as_object().expect("responses");
        for (status, answer) in responses {
            if status.starts_with('4') || status == "503" && route.path != "/readyz" {
                assert_eq!(
                    answer["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{label} {status}"
                );
            }
        }
        match route.access {
            Access::Open => assert!(op.get("security").is_none(), "{label}"),
            Access::Scope(..) => {
                let security = op["security"].as_array().expect("security");
                assert!(
                    security.iter().any(|s| s.get("bearer").is_some()),
                    "{label}"
                );
                assert!(
                    security.iter().any(|s| s.get("session_cookie").is_some()),
                    "{label}"
                );
                for status in ["401", "403", "503"] {
                    assert!(responses.contains_key(status), "{label} lacks {status}");
                }
            }
        }
        if op.get("requestBody").is_some() {
            for status in ["400", "408", "413", "422"] {
                assert!(responses.contains_key(status), "{label} lacks {status}");
            }
        }
    }

    // A member of an `allOf` (a flattened type) that refused other fields would refuse
    // every answer it is part of.
    for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
        for part in schema["allOf"].as_array().into_iter().flatten() {
            let part = match part["$ref"].as_str() {
                Some(target) => doc.pointer(target.trim_start_matches('#')).expect("ref"),
                None => part,
            };
            assert_ne!(part["additionalProperties"], json!(false), "{name}: {part}");
        }
    }

    let codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<&str> = hinter_wire::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(codes, expected);
    let states: BTreeSet<&str> = doc["components"]["schemas"]["JobState"]["enum"]
        .as_array()
        .expect("JobState enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(states.len(), hinter_core::JobState::ALL.len());
    let kinds = doc["components"]["schemas"]["EventKind"]["enum"]
        .as_array()
        .expect("EventKind enum");
    assert_eq!(kinds.len(), hinter_core::EventKind::ALL.len());
    let events = &doc["paths"]["/api/v1/events"]["get"]["responses"]["200"]["content"];
    assert!(events.get("text/event-stream").is_some(), "{events}");
    let job = &doc["components"]["schemas"]["Job"]["properties"];
    assert_eq!(job["id"]["format"], "uuid");
    assert_eq!(job["created_at"]["format"], "date-time");

    // The document is the same on every request (built once), and the route is open.
    let (status, _, again) = server.get("/api/v1/openapi.json").await;
    assert_eq!((status, &again), (200, &doc));
    let (status, _, refused) = server.get("/api/v1/queues").await;
    assert_eq!(status, 401, "{refused}");
}

/// Real answers have every field their schema requires and none it does not name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_have_the_fields_their_schemas_name() {
    let server = start(AuthConfig::default()).await;
    let doc = server.document().await;
    let (status, enqueued) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs",
            json!({"job": "report", "payload": {"n": 1}, "timeout": "5m"}),
        )
        .await;
    assert_eq!(status, 201, "{enqueued}");
    check_fields(&doc, "Enqueued", &enqueued);
    check_fields(&doc, "Job", &enqueued["job"]);
    let id = enqueued["job"]["id"].as_str().expect("id").to_string();
    let (_, _, job) = server.get(&format!("/api/v1/jobs/{id}")).await;
    check_fields(&doc, "Job", &job);
    for include in ["", "&include=payload,result,errors,runs"] {
        let (status, _, page) = server.get(&format!("/api/v1/jobs?limit=5{include}")).await;
        assert_eq!(status, 200, "{page}");
        check_fields(&doc, "Page", &page);
        check_fields(&doc, "JobSummary", &page["jobs"][0]);
    }
    let (status, leases) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/leases",
            json!({"worker_id": "w-1", "lease": 30}),
        )
        .await;
    assert_eq!(status, 200, "{leases}");
    check_fields(&doc, "Leases", &leases);
    check_fields(&doc, "LeasedJob", &leases["jobs"][0]);
    let (_, _, queues) = server.get("/api/v1/queues").await;
    check_fields(&doc, "QueueInfo", &queues["queues"][0]);
    let (_, _, events) = server.get("/api/v1/events").await;
    check_fields(&doc, "EventsPage", &events);
    check_fields(&doc, "JobEvent", &events["events"][0]);
    let (status, _, missing) = server
        .get(&format!("/api/v1/jobs/{}", uuid::Uuid::nil()))
        .await;
    assert_eq!(status, 404);
    check_fields(&doc, "ErrorBody", &missing);
    check_fields(&doc, "ErrorDetail", &missing["error"]);
    let (status, schedule) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/schedules",
            json!({"name": "nightly", "cron": "0 3 * * *", "job": "report"}),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    check_fields(&doc, "ScheduleView", &schedule);
    let (_, _, workers) = server.get("/api/v1/workers").await;
    check_fields(&doc, "WorkerList", &workers);
    let (_, _, health) = server.get("/readyz").await;
    check_fields(&doc, "Status", &health);
}

/// The schema of parameter `name` (in `location`) of `method path`.
fn parameter<'a>(
    doc: &'a Value,
    method: &str,
    path: &str,
    location: &str,
    name: &str,
) -> &'a Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{method} {path}: no parameters"))
        .iter()
        .find(|p| p["name"] == name && p["in"] == location)
        .map(|p| &p["schema"])
        .unwrap_or_else(|| panic!("{method} {path}: no {location} parameter {name}"))
}

/// The document states the input rules the server checks (the fuzz test checks both ways
/// that they are the server's; here, that they are stated, and the server's answers at
/// their edges).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_states_the_input_rules() {
    let server = start(AuthConfig::default()).await;
    let doc = server.document().await;
    let schemas = &doc["components"]["schemas"];
    let name = hinter_core::openapi::name_pattern();
    assert!(name.starts_with("^(?:[A-Za-z0-9._:-]{3,200}|"), "{name}");

    // Names: in paths as they are; in query filters also empty (= absent); in bodies.
    for path in [
        "/api/v1/queues/{name}/pause",
        "/api/v1/queues/{name}/resume",
        "/api/v1/queues/{name}/purge",
    ] {
        assert_eq!(
            parameter(&doc, "post", path, "path", "name")["pattern"],
            name,
            "{path}"
        );
    }
    assert_eq!(
        parameter(&doc, "get", "/api/v1/schedules/{name}", "path", "name")["pattern"],
        name
    );
    assert_eq!(
        parameter(&doc, "post", "/hooks/{job}", "path", "job")["pattern"],
        hinter_core::openapi::job_name_pattern()
    );
    let empty_or_name = hinter_core::openapi::or_empty(&name);
    assert!(empty_or_name.ends_with(")?$"), "{empty_or_name}");
    for (path, param) in [
        ("/api/v1/jobs", "queue"),
        ("/api/v1/jobs", "job"),
        ("/api/v1/events", "queue"),
        ("/api/v1/events", "job"),
    ] {
        assert_eq!(
            parameter(&doc, "get", path, "query", param)["pattern"],
            empty_or_name,
            "{path} {param}"
        );
    }
    assert_eq!(schemas["Name"]["pattern"], name);
    assert_eq!(
        schemas["JobSpec"]["properties"]["job"]["$ref"],
        "#/components/schemas/JobName"
    );

    // Lists that must not be empty, numeric bounds, integers.
    let purge = &schemas["PurgeBody"]["properties"]["states"];
    assert_eq!(purge["minItems"], 1, "{purge}");
    assert_eq!(
        schemas["FinishedState"]["enum"],
        json!(["succeeded", "dead", "cancelled"])
    );
    let lease = &schemas["LeaseRequest"]["properties"];
    assert_eq!(lease["queues"]["minItems"], 1, "{lease}");
    assert_eq!(
        (&lease["max"]["minimum"], &lease["max"]["maximum"]),
        (&json!(1), &json!(1000))
    );
    let job = &schemas["JobSpec"]["properties"];
    assert_eq!(
        (&job["priority"]["minimum"], &job["priority"]["maximum"]),
        (&json!(-1000), &json!(1000))
    );
    assert_eq!(job["max_attempts"]["minimum"], 1);
    let percent = &schemas["ProgressUpdate"]["properties"]["percent"];
    assert_eq!(
        (&percent["minimum"], &percent["maximum"]),
        (&json!(0), &json!(100))
    );
    let limit = parameter(&doc, "get", "/api/v1/jobs", "query", "limit");
    let limit_types: Vec<&Value> = limit["anyOf"].as_array().expect("anyOf").iter().collect();
    assert_eq!(limit_types[0]["type"], "integer", "{limit}");
    assert_eq!(
        (&limit_types[0]["minimum"], &limit_types[0]["maximum"]),
        (&json!(1), &json!(1000))
    );
    assert_eq!(limit_types[1], &json!({"type": "string", "maxLength": 0}));

    // Durations, the Idempotency-Key, the cursor.
    let wait = parameter(&doc, "get", "/api/v1/jobs/{id}", "query", "wait")["pattern"]
        .as_str()
        .expect("wait pattern");
    assert!(
        wait.contains("|3650(?:\\.0*)?|") && wait.ends_with(")?$"),
        "{wait}"
    );
    let lease_input = &schemas["LeaseDurationInput"]["oneOf"];
    assert_eq!(
        (&lease_input[1]["minimum"], &lease_input[1]["maximum"]),
        (&json!(1), &json!(3600))
    );
    assert_eq!(
        parameter(&doc, "post", "/api/v1/jobs", "header", "Idempotency-Key")["pattern"],
        "^[ -~]{1,255}$"
    );
    let cursor = parameter(&doc, "get", "/api/v1/jobs", "query", "cursor")["pattern"]
        .as_str()
        .expect("cursor pattern");
    assert!(cursor.starts_with("^(?:[0-9]{1,19}(?:~"), "{cursor}");

    // Bodies: `cron` or `at`; not `run_at` and `delay`; `unique_for` needs `unique_key`.
    let one_of = &schemas["ScheduleSpec"]["oneOf"];
    assert_eq!(one_of[0]["required"], json!(["cron"]), "{one_of}");
    assert_eq!(one_of[1]["required"], json!(["at"]), "{one_of}");
    assert_eq!(schemas["ScheduleReplace"]["oneOf"], *one_of);
    assert!(schemas["ScheduleReplace"]["properties"]
        .get("name")
        .is_none());
    assert_eq!(
        schemas["JobSpec"]["not"]["allOf"][1]["required"],
        json!(["delay"])
    );
    assert_eq!(
        schemas["JobSpec"]["anyOf"][1]["required"],
        json!(["unique_key"])
    );

    // The answers at the edges, as documented.
    for (path, status) in [
        ("/api/v1/jobs?queue=&job=&state=&limit=&cursor=", 200),
        ("/api/v1/jobs?cursor=5", 200),
        ("/api/v1/jobs?cursor=0", 404),
        ("/api/v1/jobs?cursor=5~9:3:", 404),
        ("/api/v1/jobs?cursor=next", 400),
        ("/api/v1/jobs?colour=red", 400),
        (
            "/api/v1/jobs/01a22ab4-54f9-7197-8eca-760c07f36b0b?colour=red",
            400,
        ),
        (
            "/api/v1/jobs/01a22ab4-54f9-7197-8eca-760c07f36b0b/logs?colour=red",
            400,
        ),
        ("/api/v1/events?job_id=&every=", 200),
        ("/api/v1/stats?window=%201h", 400),
    ] {
        let (got, _, body) = server.get(path).await;
        assert_eq!(got, status, "{path}: {body}");
    }
    // Integers in any JSON spelling of a whole number.
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs",
            json!({"job": "a", "priority": 5.0, "max_attempts": 3e0}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (&body["job"]["priority"], &body["job"]["max_attempts"]),
        (&json!(5), &json!(3))
    );
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            "/api/v1/jobs",
            json!({"job": "a", "priority": 5.5}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
}
