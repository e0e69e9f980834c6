// Tokens, scopes and queues over real HTTP on loopback. Included by `auth.rs` (SQLite) and
// `auth_postgres.rs` (PostgreSQL), which each provide `backend::open`.
//
// The matrix is generated from `hinter_server::routes()`: every route is tried without a
// token, with a bad, a revoked, each single-scope and queue-limited tokens. A route added
// without a sample request here, or open beyond the health checks, fails it.

use chrono::Utc;
use hinter_core::access::{generate_secret, hash_secret, NewToken, Scope, ACTOR_CLI};
use hinter_core::{Backend, Store, SystemClock};
use hinter_server::auth::Authenticator;
use hinter_server::{
    routes, Access, AppState, AuthConfig, ConnLimits, QueueCheck, RouteSpec, ServerConfig,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The queue of the job every `{id}` route names, and the one limited tokens may use.
const QUEUE: &str = "jobs-q";

struct Server {
    base: String,
    store: Arc<dyn Backend>,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Answer {
    status: StatusCode,
    www_authenticate: Option<String>,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }
}

/// `hinter_server::serve` on 127.0.0.1 over a fresh store.
async fn start(auth: AuthConfig) -> Option<Server> {
    let (store, guard) = backend::open().await?;
    let state = AppState {
        store: store.clone() as Arc<dyn Store>,
        cluster: store.clone() as Arc<dyn hinter_core::Cluster>,
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
    let task = tokio::spawn(hinter_server::serve(
        listener,
        state,
        ConnLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    Some(Server {
        base,
        store,
        http: reqwest::Client::new(),
        stop: Some(stop),
        task: Some(task),
        _guard: guard,
    })
}

impl Server {
    async fn send(&self, method: Method, path: &str, body: Option<&Value>, token: Auth<'_>) -> Answer {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        request = match token {
            Auth::None => request,
            Auth::Bearer(token) => request.bearer_auth(token),
            Auth::Header(value) => request.header("authorization", value),
        };
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let www_authenticate = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or("<binary>").to_string());
        let json = response
            .headers()
            .get("content-type")
            .is_none_or(|v| v.to_str().unwrap_or_default().contains("json"));
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else if !json {
            // `/metrics`: text; errors are JSON whatever the route.
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{path}: answer is not JSON ({e}): {bytes:?}"))
        };
        Answer {
            status,
            www_authenticate,
            body,
        }
    }

    /// A new token in the store; its secret.
    async fn token(&self, name: &str, scopes: &[Scope], queues: Option<&[&str]>) -> String {
        let (secret, hash) = generate_secret();
        self.store
            .token_create(
                NewToken {
                    name: name.into(),
                    hash,
                    scopes: scopes.to_vec(),
                    queues: queues.map(|q| q.iter().map(|s| s.to_string()).collect()),
                },
                ACTOR_CLI,
                Utc::now(),
            )
            .await
            .expect("token_create");
        // The server has seen a token (an open API would let anything in), and this one.
        self.wait_until("", |status| status == StatusCode::UNAUTHORIZED)
            .await;
        self.wait_until(&secret, |status| status != StatusCode::UNAUTHORIZED)
            .await;
        secret
    }

    /// Waits until `GET /api/v1/queues` with `secret` (none if empty) answers a status `done`
    /// accepts: the server's token cache has seen a change on the store.
    async fn wait_until(&self, secret: &str, done: impl Fn(StatusCode) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let auth = match secret {
                "" => Auth::None,
                secret => Auth::Bearer(secret),
            };
            let answer = self.send(Method::GET, "/api/v1/queues", None, auth).await;
            if done(answer.status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not see the token change: {} {}",
                answer.status,
                answer.body
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The schedule every `/api/v1/schedules/{name}` route names (its name is [`QUEUE`]),
    /// made again before each request, as some requests delete it.
    async fn ensure_schedule(&self) {
        let spec = serde_json::from_value(schedule_body()).expect("spec");
        let new = hinter_core::schedule::NewSchedule::from_spec(spec, "api", Utc::now(), false)
            .expect("valid");
        self.store
            .write_unit(vec![hinter_core::store::WriteOp::ScheduleSave(new)], Utc::now())
            .await
            .expect("save the schedule");
    }

    /// A job in [`QUEUE`], enqueued with `token`; its id.
    async fn job(&self, token: Auth<'_>) -> String {
        let answer = self
            .send(
                Method::POST,
                "/api/v1/jobs",
                Some(&json!({"job": "report", "queue": QUEUE})),
                token,
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body["job"]["id"].as_str().expect("id").to_string()
    }
}

#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Header(&'a str),
}

fn schedule_body() -> Value {
    json!({"name": QUEUE, "cron": "0 3 * * *", "job": "report", "queue": QUEUE})
}

/// A request that reaches each route's handler, and with a valid body its queue check: the
/// path with `{id}` (a job in [`QUEUE`]) or `{name}` ([`QUEUE`]) filled in.
fn sample(spec: &RouteSpec, job_id: &str) -> (String, Option<Value>) {
    let path = spec
        .path
        .replace("{id}", if spec.path.starts_with("/api/v1/workers") { "worker-1" } else { job_id })
        .replace("{name}", QUEUE);
    let body = match (spec.method.as_str(), spec.path) {
        ("GET", "/" | "/ui/session") | ("POST", "/ui/logout") => None,
        // The dashboard's files; its login form, with a token that is not valid.
        ("GET", "/ui/{file}") => return ("/ui/app.js".into(), None),
        ("POST", "/ui/login") => return ("/ui/login".into(), None),
        ("GET", "/healthz" | "/readyz" | "/api/v1/openapi.json")
        | ("GET", "/api/v1/jobs/{id}" | "/api/v1/queues")
        | ("GET", "/api/v1/workers" | "/api/v1/audit" | "/api/v1/definitions" | "/metrics")
        | ("GET", "/api/v1/stats")
        | ("GET", "/api/v1/jobs/{id}/logs")
        | ("POST", "/api/v1/jobs/{id}/cancel" | "/api/v1/jobs/{id}/retry")
        | ("POST", "/api/v1/queues/{name}/pause" | "/api/v1/queues/{name}/resume")
        | ("DELETE", "/api/v1/workers/{id}" | "/api/v1/jobs/{id}") => None,
        ("POST", "/api/v1/queues/{name}/purge") => Some(json!({"states": ["dead"]})),
        ("GET", "/api/v1/schedules" | "/api/v1/schedules/{name}")
        | ("GET", "/api/v1/schedules/{name}/occurrences")
        | ("DELETE", "/api/v1/schedules/{name}")
        | ("POST", "/api/v1/schedules/{name}/pause" | "/api/v1/schedules/{name}/resume") => None,
        ("POST", "/api/v1/schedules") | ("PUT", "/api/v1/schedules/{name}") => Some(schedule_body()),
        ("POST", "/hooks/{job}") => {
            return (format!("/hooks/report?queue={QUEUE}"), Some(json!({"any": ["json"]})));
        }
        ("GET", "/api/v1/jobs" | "/api/v1/events") => {
            return (format!("{path}?queue={QUEUE}"), None);
        }
        ("POST", "/api/v1/jobs") => Some(json!({"job": "report", "queue": QUEUE})),
        ("POST", "/api/v1/jobs/batch") => {
            Some(json!({"jobs": [{"job": "report", "queue": QUEUE}]}))
        }
        ("POST", "/api/v1/jobs/{id}/heartbeat" | "/api/v1/jobs/{id}/complete")
        | ("POST", "/api/v1/jobs/{id}/release") => Some(json!({"lease_token": 1})),
        ("POST", "/api/v1/jobs/{id}/report") => Some(json!({"lease_token": 1, "logs": []})),
        ("POST", "/api/v1/jobs/{id}/fail") => Some(json!({"lease_token": 1, "error": "boom"})),
        ("POST", "/api/v1/leases") => Some(json!({"queues": [QUEUE], "worker_id": "w"})),
        ("POST", "/api/v1/outcomes") => Some(json!({
            "outcomes": [{"id": job_id, "lease_token": 1, "outcome": "complete"}]
        })),
        ("PUT", "/api/v1/workers/{id}") => Some(json!({
            "host": "h", "pid": 1, "concurrency": 1, "started_at": "2026-01-01T00:00:00Z"
        })),
        (method, path) => panic!(
            "{method} {path} has no sample request in the auth matrix (tests/auth/cases.rs): \
             add one, with the scope and queue rule it needs"
        ),
    };
    (path, body)
}

/// What a token limited to another queue gets, by the route's queue rule.
fn other_queue_allowed(check: QueueCheck) -> bool {
    matches!(check, QueueCheck::None | QueueCheck::Restrict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_every_route_every_token() {
    let Some(server) = start(AuthConfig::default()).await else {
        return;
    };
    let table = routes();
    // Only the health checks, the API's description and the dashboard's page, files and session routes (which hold
    // no data, or check the token themselves) are open; every other route names a scope.
    let open: Vec<&str> = table
        .iter()
        .filter(|r| r.access == Access::Open)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        open,
        [
            "/healthz",
            "/readyz",
            "/api/v1/openapi.json",
            "/",
            "/ui/{file}",
            "/ui/session",
            "/ui/login",
            "/ui/logout"
        ]
    );

    let admin = server.token("admin", &[Scope::Admin], None).await;
    let job_id = server.job(Auth::Bearer(&admin)).await;
    let revoked = server.token("revoked", &[Scope::Admin], None).await;
    server
        .store
        .token_revoke("revoked", ACTOR_CLI, Utc::now())
        .await
        .expect("revoke");
    let mut single = Vec::new();
    for scope in Scope::ALL {
        let name = format!("only-{scope}");
        single.push((scope, server.token(&name, &[scope], None).await));
    }
    let this_queue = server
        .token("this-queue", &[Scope::Admin], Some(&[QUEUE]))
        .await;
    let other_queue = server
        .token("other-queue", &[Scope::Admin], Some(&["elsewhere"]))
        .await;
    let (bad, _) = generate_secret();
    server
        .wait_until(&revoked, |status| status == StatusCode::UNAUTHORIZED)
        .await;

    let mut failures = Vec::new();
    let mut check = |what: String, ok: bool| {
        if !ok {
            failures.push(what);
        }
    };
    for spec in &table {
        let (path, body) = sample(spec, &job_id);
        let label = format!("{} {}", spec.method, spec.path);
        macro_rules! send {
            ($auth:expr) => {{
                if spec.path.starts_with("/api/v1/schedules/{name}") {
                    server.ensure_schedule().await;
                }
                server
                    .send(spec.method.clone(), &path, body.as_ref(), $auth)
                    .await
            }};
        }
        let Access::Scope(needed, queue_check) = spec.access else {
            for auth in [Auth::None, Auth::Bearer(&bad)] {
                let answer = send!(auth);
                // The login form refuses a missing token (it gives none): 422 naming the field.
                let ok = if spec.path == "/ui/login" {
                    answer.status == StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    answer.status == StatusCode::OK
                };
                check(format!("{label}: open route answered {} {}", answer.status, answer.body), ok);
            }
            continue;
        };
        for (case, auth) in [
            ("no token", Auth::None),
            ("bad token", Auth::Bearer(&bad)),
            ("revoked token", Auth::Bearer(&revoked)),
            ("not bearer", Auth::Header("Basic YWRtaW46YWRtaW4=")),
            ("empty bearer", Auth::Header("Bearer ")),
        ] {
            let answer = send!(auth);
            check(
                format!("{label} with {case}: {} {}", answer.status, answer.body),
                answer.status == StatusCode::UNAUTHORIZED
                    && answer.code() == "unauthorized"
                    && answer.www_authenticate.as_deref() == Some("Bearer"),
            );
        }
        for (scope, secret) in &single {
            let answer = send!(Auth::Bearer(secret));
            let allowed = scope.covers(needed);
            let ok = if allowed {
                !matches!(answer.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            } else {
                answer.status == StatusCode::FORBIDDEN && answer.code() == "forbidden"
            };
            check(
                format!("{label} with only {scope} (allowed: {allowed}): {} {}", answer.status, answer.body),
                ok,
            );
        }
        // The route is real: an admin reaches its handler, which finds what it names.
        let answer = send!(Auth::Bearer(&admin));
        check(
            format!("{label} with admin: {} {}", answer.status, answer.body),
            !matches!(
                answer.status,
                StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
                    | StatusCode::NOT_FOUND
                    | StatusCode::METHOD_NOT_ALLOWED
            ),
        );
        let answer = send!(Auth::Bearer(&this_queue));
        let allowed = queue_check != QueueCheck::Unlimited;
        check(
            format!("{label} limited to its queue (allowed: {allowed}): {} {}", answer.status, answer.body),
            if allowed {
                !matches!(answer.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            } else {
                answer.status == StatusCode::FORBIDDEN
            },
        );
        let answer = send!(Auth::Bearer(&other_queue));
        let allowed = other_queue_allowed(queue_check);
        check(
            format!("{label} limited to another queue (allowed: {allowed}): {} {}", answer.status, answer.body),
            if allowed {
                !matches!(answer.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            } else {
                answer.status == StatusCode::FORBIDDEN && answer.code() == "forbidden"
            },
        );
    }
    assert!(failures.is_empty(), "auth matrix failures:\n{}", failures.join("\n"));
}

/// Listings a limited token may make: its own queues only. Without `queue=`, the jobs list and
/// the event log show every queue of the token (not only its first), and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_tokens_see_only_their_queues() {
    let Some(server) = start(AuthConfig::default()).await else {
        return;
    };
    let admin = server.token("admin", &[Scope::Admin], None).await;
    server.job(Auth::Bearer(&admin)).await;
    let answer = server
        .send(
            Method::POST,
            "/api/v1/jobs",
            Some(&json!({"job": "other", "queue": "elsewhere"})),
            Auth::Bearer(&admin),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    const SECOND: &str = "second-q";
    let answer = server
        .send(
            Method::POST,
            "/api/v1/jobs",
            Some(&json!({"job": "second", "queue": SECOND})),
            Auth::Bearer(&admin),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    // Two queues, the second first: no listing may depend on the order.
    let reader = server.token("reader", &[Scope::Read], Some(&[SECOND, QUEUE])).await;
    let queues = server
        .send(Method::GET, "/api/v1/queues", None, Auth::Bearer(&reader))
        .await;
    assert_eq!(queues.status, StatusCode::OK);
    let names: Vec<&str> = queues.body["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, [QUEUE, SECOND]);
    let queues_of = |body: &Value, list: &str| -> Vec<String> {
        let mut names: Vec<String> = body[list]
            .as_array()
            .expect("a list")
            .iter()
            .map(|item| item["queue"].as_str().expect("queue").to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let all = server
        .send(Method::GET, "/api/v1/jobs", None, Auth::Bearer(&reader))
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["jobs"].as_array().expect("jobs").len(), 2, "{}", all.body);
    assert_eq!(queues_of(&all.body, "jobs"), [QUEUE, SECOND]);
    // Paged, the cursor keeps to the same queues.
    let first = server
        .send(Method::GET, "/api/v1/jobs?state=queued&limit=1", None, Auth::Bearer(&reader))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let cursor = first.body["next_cursor"].as_str().expect("a second page").to_string();
    let second = server
        .send(
            Method::GET,
            &format!("/api/v1/jobs?state=queued&limit=1&cursor={cursor}"),
            None,
            Auth::Bearer(&reader),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["jobs"].as_array().expect("jobs").len(), 1, "{}", second.body);
    assert!(second.body["next_cursor"].is_null(), "no third page: {}", second.body);
    // The event log: both queues' entries, none of the other queue (a PostgreSQL entry is
    // readable once older transactions end: wait for both).
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = server
            .send(Method::GET, "/api/v1/events", None, Auth::Bearer(&reader))
            .await;
        assert_eq!(events.status, StatusCode::OK, "{}", events.body);
        if queues_of(&events.body, "events").len() == 2 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(queues_of(&events.body, "events"), [QUEUE, SECOND]);
    // A queue= filter of another queue is still refused, naming the token's queues.
    let other = server
        .send(Method::GET, "/api/v1/jobs?queue=elsewhere", None, Auth::Bearer(&reader))
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.body);
    let events = server
        .send(Method::GET, "/api/v1/events?queue=elsewhere", None, Auth::Bearer(&reader))
        .await;
    assert_eq!(events.status, StatusCode::FORBIDDEN, "{}", events.body);
    let mine = server
        .send(Method::GET, &format!("/api/v1/jobs?queue={QUEUE}"), None, Auth::Bearer(&reader))
        .await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.body["jobs"].as_array().expect("jobs").len(), 1);
    // One job of a batch outside the token's queues refuses the whole batch, naming it.
    let enqueuer = server.token("enqueuer", &[Scope::Enqueue], Some(&[QUEUE])).await;
    let batch = server
        .send(
            Method::POST,
            "/api/v1/jobs/batch",
            Some(&json!({"jobs": [{"job": "a", "queue": QUEUE}, {"job": "b", "queue": "elsewhere"}]})),
            Auth::Bearer(&enqueuer),
        )
        .await;
    assert_eq!(batch.status, StatusCode::FORBIDDEN);
    assert!(batch.body["error"]["message"].as_str().expect("message").starts_with("jobs[1].queue"));
    let listed = server
        .send(Method::GET, &format!("/api/v1/jobs?queue={QUEUE}"), None, Auth::Bearer(&reader))
        .await;
    assert_eq!(listed.body["jobs"].as_array().expect("jobs").len(), 1, "nothing inserted");
}

/// With no token in the store the API is open (the loopback mode), until one is made; a
/// server that requires tokens refuses everyone while there is none. Open routes stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_without_tokens_unless_required() {
    let Some(server) = start(AuthConfig::default()).await else {
        return;
    };
    let open = server.send(Method::GET, "/api/v1/queues", None, Auth::None).await;
    assert_eq!(open.status, StatusCode::OK);
    server.token("first", &[Scope::Read], None).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = server.send(Method::GET, "/api/v1/queues", None, Auth::None).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "still open after a token was made");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Revoking the last token opens it again: no token at all is the loopback mode.
    server
        .store
        .token_revoke("first", ACTOR_CLI, Utc::now())
        .await
        .expect("revoke");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = server.send(Method::GET, "/api/v1/queues", None, Auth::None).await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "still closed with no token left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);

    let Some(server) = start(AuthConfig {
        require_tokens: true,
        declared: Vec::new(),
    })
    .await
    else {
        return;
    };
    let refused = server.send(Method::GET, "/api/v1/queues", None, Auth::None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.www_authenticate.as_deref(), Some("Bearer"));
    let health = server.send(Method::GET, "/healthz", None, Auth::None).await;
    assert_eq!(health.status, StatusCode::OK);
}

/// Tokens declared in configuration work beside stored ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_tokens_are_accepted() {
    let secret = "hnt_declared-secret-for-the-test";
    let Some(server) = start(AuthConfig {
        require_tokens: true,
        declared: vec![NewToken {
            name: "from-config".into(),
            hash: hash_secret(secret),
            scopes: vec![Scope::Enqueue],
            queues: None,
        }],
    })
    .await
    else {
        return;
    };
    server.job(Auth::Bearer(secret)).await;
    let read = server.send(Method::GET, "/api/v1/queues", None, Auth::Bearer(secret)).await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
    assert!(read.body["error"]["message"].as_str().expect("message").contains("\"from-config\""));
}

/// A token revoked on the store is refused within [`REFRESH`] and a bit: the documented ~1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_within_the_refresh() {
    let Some(server) = start(AuthConfig::default()).await else {
        return;
    };
    // Another token stays: with none left, a loopback API is open again.
    server.token("stays", &[Scope::Read], None).await;
    let secret = server.token("soon-gone", &[Scope::Read], None).await;
    let ok = server.send(Method::GET, "/api/v1/queues", None, Auth::Bearer(&secret)).await;
    assert_eq!(ok.status, StatusCode::OK);
    server
        .store
        .token_revoke("soon-gone", ACTOR_CLI, Utc::now())
        .await
        .expect("revoke");
    let revoked_at = Instant::now();
    loop {
        let answer = server.send(Method::GET, "/api/v1/queues", None, Auth::Bearer(&secret)).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(3),
            "the revoked token still works after {:?}",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = revoked_at.elapsed();
    assert!(took <= hinter_server::auth::REFRESH + Duration::from_millis(900), "{took:?}");
}

/// Admin actions are recorded with the token's name, or `(no auth)` on an open API, and read
/// back through `GET /api/v1/audit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_are_audited_with_the_token_name() {
    let Some(server) = start(AuthConfig::default()).await else {
        return;
    };
    // Open: no token yet.
    let id = server.job(Auth::None).await;
    let paused = server
        .send(Method::POST, &format!("/api/v1/queues/{QUEUE}/pause"), None, Auth::None)
        .await;
    assert_eq!(paused.status, StatusCode::OK);
    let ops = server.token("ops", &[Scope::Admin], None).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = server
            .send(Method::POST, &format!("/api/v1/jobs/{id}/cancel"), None, Auth::Bearer(&ops))
            .await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "{} {}", answer.status, answer.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [format!("/api/v1/jobs/{id}/retry"), format!("/api/v1/queues/{QUEUE}/resume")] {
        let answer = server.send(Method::POST, &path, None, Auth::Bearer(&ops)).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    }
    // A refused action is not recorded.
    let again = server
        .send(Method::POST, &format!("/api/v1/jobs/{id}/retry"), None, Auth::Bearer(&ops))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let audit = server.send(Method::GET, "/api/v1/audit", None, Auth::Bearer(&ops)).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
    let entries: Vec<(String, String, String)> = audit.body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().expect("actor").into(),
                e["action"].as_str().expect("action").into(),
                e["target"].as_str().expect("target").into(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("ops", "queue.resume", QUEUE.to_string()),
        ("ops", "job.retry", id.clone()),
        ("ops", "job.cancel", id.clone()),
        ("cli", "token.create", "ops".to_string()),
        ("(no auth)", "queue.pause", QUEUE.to_string()),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c))
    .collect();
    assert_eq!(entries, expected);
    let page = server
        .send(Method::GET, "/api/v1/audit?limit=2", None, Auth::Bearer(&ops))
        .await;
    let next = page.body["next_before"].as_i64().expect("next_before");
    let older = server
        .send(Method::GET, &format!("/api/v1/audit?before={next}&limit=10"), None, Auth::Bearer(&ops))
        .await;
    assert_eq!(older.body["entries"].as_array().expect("entries").len(), 3);
    assert_eq!(older.body["next_before"], Value::Null);
}

/// A token check reads the cached token list: the store is read about once per
/// [`hinter_server::auth::REFRESH`], however many requests come (a read per request would
/// make every request as slow as the store). Its cost per request is a figure of
/// `cargo bench -p hinter-server --bench auth`, not bounded here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_checks_read_the_store_once_per_refresh() {
    let Some(server) = start(AuthConfig::default()).await else {
        return;
    };
    let mut last = String::new();
    for i in 0..20 {
        last = server.token(&format!("t{i}"), &[Scope::Read], None).await;
    }
    let auth = Authenticator::new(server.store.clone() as Arc<dyn Store>, AuthConfig::default());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {last}").parse().expect("header"),
    );
    auth.authenticate(&headers, Scope::Read).await.expect("warm the cache");
    assert_eq!(auth.reloads(), 1);
    let started = Instant::now();
    for _ in 0..5_000 {
        auth.authenticate(&headers, Scope::Read).await.expect("authenticate");
    }
    let refreshes = started.elapsed().as_secs_f64() / hinter_server::auth::REFRESH.as_secs_f64();
    let reloads = auth.reloads() - 1;
    assert!(
        (reloads as f64) <= refreshes.floor() + 1.0,
        "{reloads} reads of the token list for 5,000 checks in {:?}",
        started.elapsed()
    );
}

/// The dashboard's session: `POST /ui/login` keeps a valid token in an `HttpOnly` cookie and
/// gives the CSRF token; the cookie authenticates API calls, and one that changes something
/// needs the CSRF token too. On an open server, a cross-site request that changes something
/// is refused; the same request with no `Origin` (a command-line client) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_session_cookie_and_csrf() {
    let Some(server) = start(AuthConfig::default()).await else {
        return;
    };
    let http = &server.http;
    let url = |path: &str| format!("{}{path}", server.base);
    let host = server.base.trim_start_matches("http://").to_string();

    // Open (no token yet): cross-site posts are refused, same-origin and CLI ones pass.
    let cross = http
        .post(url(&format!("/api/v1/queues/{QUEUE}/pause")))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("post");
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let body: Value = cross.json().await.expect("json");
    assert_eq!(body["error"]["code"], "csrf", "{body}");
    let fetch_site = http
        .post(url(&format!("/api/v1/queues/{QUEUE}/pause")))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("post");
    assert_eq!(fetch_site.status(), StatusCode::FORBIDDEN);
    let same = http
        .post(url(&format!("/api/v1/queues/{QUEUE}/pause")))
        .header("origin", server.base.as_str())
        .header("host", host.as_str())
        .send()
        .await
        .expect("post");
    assert_eq!(same.status(), StatusCode::OK);
    let session: Value = http.get(url("/ui/session")).send().await.expect("get").json().await.expect("json");
    assert_eq!(session["open"], true, "{session}");

    let admin = server.token("admin", &[Scope::Admin], None).await;
    let reader = server.token("reader", &[Scope::Read], None).await;
    let refused = http
        .post(url("/ui/login"))
        .form(&[("token", "hnt_not-a-token")])
        .send()
        .await
        .expect("login");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers().get("set-cookie").is_none());

    let login = http
        .post(url("/ui/login"))
        .form(&[("token", admin.as_str())])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().expect("text").to_string();
    assert_eq!(cookie, format!("hinter_session={admin}; HttpOnly; SameSite=Strict; Path=/"));
    let body: Value = login.json().await.expect("json");
    assert_eq!(body["scopes"], json!(["admin"]), "{body}");
    let csrf = body["csrf"].as_str().expect("csrf").to_string();
    let jar = format!("hinter_session={admin}");

    let session: Value = http
        .get(url("/ui/session"))
        .header("cookie", &jar)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!((session["name"].as_str(), session["csrf"].as_str()), (Some("admin"), Some(csrf.as_str())));
    let anonymous: Value = http.get(url("/ui/session")).send().await.expect("get").json().await.expect("json");
    assert_eq!(anonymous["authenticated"], false, "{anonymous}");

    let read = http.get(url("/api/v1/queues")).header("cookie", &jar).send().await.expect("get");
    assert_eq!(read.status(), StatusCode::OK);
    let resume = format!("/api/v1/queues/{QUEUE}/resume");
    let no_csrf = http.post(url(&resume)).header("cookie", &jar).send().await.expect("post");
    assert_eq!(no_csrf.status(), StatusCode::FORBIDDEN);
    let body: Value = no_csrf.json().await.expect("json");
    assert_eq!(body["error"]["code"], "csrf");
    assert!(body["error"]["message"].as_str().expect("message").contains("X-CSRF-Token"));
    let wrong = http
        .post(url(&resume))
        .header("cookie", &jar)
        .header("x-csrf-token", hinter_server::auth::csrf_token(&reader))
        .send()
        .await
        .expect("post");
    assert_eq!(wrong.status(), StatusCode::FORBIDDEN);
    let ok = http
        .post(url(&resume))
        .header("cookie", &jar)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), StatusCode::OK);
    // A bearer request needs no CSRF token; a reader's cookie may look but not act.
    let bearer = http.post(url(&resume)).bearer_auth(&admin).send().await.expect("post");
    assert_eq!(bearer.status(), StatusCode::OK);
    let reader_jar = format!("hinter_session={reader}");
    let looked = http.get(url("/api/v1/queues")).header("cookie", &reader_jar).send().await.expect("get");
    assert_eq!(looked.status(), StatusCode::OK);
    let acted = http
        .post(url(&resume))
        .header("cookie", &reader_jar)
        .header("x-csrf-token", hinter_server::auth::csrf_token(&reader))
        .send()
        .await
        .expect("post");
    assert_eq!(acted.status(), StatusCode::FORBIDDEN);
    let body: Value = acted.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden");
    // A revoked token's cookie is refused; logging out clears the cookie.
    let logout = http.post(url("/ui/logout")).header("cookie", &jar).send().await.expect("post");
    assert!(logout.headers()["set-cookie"].to_str().expect("text").contains("Max-Age=0"));
    let bogus = http.get(url("/api/v1/queues")).header("cookie", "hinter_session=hnt_nope").send().await.expect("get");
    assert_eq!(bogus.status(), StatusCode::UNAUTHORIZED);
    // The page: a strict policy, no framing.
    let page = http.get(url("/")).send().await.expect("get");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"].to_str().expect("text").to_string();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let script = http.get(url("/ui/app.js")).send().await.expect("get");
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    let etag = script.headers()["etag"].clone();
    let again = http.get(url("/ui/app.js")).header("if-none-match", etag).send().await.expect("get");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let missing = http.get(url("/ui/nope.js")).send().await.expect("get");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
