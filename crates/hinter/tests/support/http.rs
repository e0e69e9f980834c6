//! A small HTTP client for one `hinter serve`.

use reqwest::Method;
use serde_json::{json, Value};
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// Longest any single HTTP call may take unless the client says otherwise (lease long-polls
/// are far shorter).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP answer: status and body (JSON if it parses, else `Value::Null`; `text` always).
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    /// `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no error code>")
    }

    /// `error.message` of an error answer.
    pub fn message(&self) -> &str {
        self.body["error"]["message"]
            .as_str()
            .unwrap_or("<no error message>")
    }

    /// Panics (showing the answer) unless the status is `status`.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "unexpected answer: {self:?}");
        self
    }

    /// Panics unless this is an error answer with `status` and `code`.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Resp {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "unexpected answer: {self:?}"
        );
        self
    }
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text)
    }
}

/// A client for one server.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    client: reqwest::Client,
}

impl Api {
    /// A client of `base` (e.g. `http://127.0.0.1:4711`) with [`REQUEST_TIMEOUT`].
    pub fn new(base: String) -> Api {
        Api::with_timeout(base, REQUEST_TIMEOUT)
    }

    /// A client of `base` whose calls may take up to `timeout` each.
    pub fn with_timeout(base: String, timeout: Duration) -> Api {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .expect("building the HTTP client");
        Api { base, client }
    }

    /// Sends a request; `Err` only if no answer came (connection refused, reset, timeout).
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Resp, reqwest::Error> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            body,
            text,
        })
    }

    pub async fn try_get(&self, path: &str) -> Result<Resp, reqwest::Error> {
        self.try_send(Method::GET, path, None).await
    }

    pub async fn try_post(&self, path: &str, body: &Value) -> Result<Resp, reqwest::Error> {
        let bytes = serde_json::to_vec(body).expect("serializing a request body");
        self.try_send(Method::POST, path, Some(bytes)).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {}{path}: no answer: {e}", self.base))
    }

    pub async fn post(&self, path: &str, body: &Value) -> Resp {
        self.try_post(path, body)
            .await
            .unwrap_or_else(|e| panic!("POST {}{path}: no answer: {e}", self.base))
    }

    /// POSTs `body` as it is (need not be JSON).
    pub async fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Resp {
        self.try_send(Method::POST, path, Some(body.into()))
            .await
            .unwrap_or_else(|e| panic!("POST {}{path}: no answer: {e}", self.base))
    }

    /// Enqueues one job; asserts 201 and returns the job object.
    pub async fn enqueue(&self, spec: Value) -> Value {
        let resp = self.post("/api/v1/jobs", &spec).await.expect_status(201);
        assert_eq!(resp.body["duplicate"], json!(false), "{resp:?}");
        resp.body["job"].clone()
    }

    /// `GET /api/v1/jobs/{id}` (must exist).
    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}"))
            .await
            .expect_status(200)
            .body
    }

    /// `POST /api/v1/leases`; asserts 200 and returns the leased jobs.
    pub async fn lease(&self, request: Value) -> Vec<Value> {
        let resp = self
            .post("/api/v1/leases", &request)
            .await
            .expect_status(200);
        resp.body["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("lease answer without jobs: {resp:?}"))
            .clone()
    }

    /// `POST /api/v1/jobs/{id}/complete` with `token` and `result` (answer not checked).
    pub async fn complete(&self, id: &str, token: &Value, result: Value) -> Resp {
        self.post(
            &format!("/api/v1/jobs/{id}/complete"),
            &json!({"lease_token": token, "result": result}),
        )
        .await
    }

    /// Every job matching `query` (e.g. `state=dead&queue=q`), following cursors.
    pub async fn list_jobs(&self, query: &str) -> Vec<Value> {
        let mut jobs = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/jobs?limit=1000&{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let resp = self.get(&path).await.expect_status(200);
            let page = resp.body["jobs"]
                .as_array()
                .unwrap_or_else(|| panic!("job list without jobs: {resp:?}"));
            jobs.extend(page.iter().cloned());
            match resp.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return jobs,
            }
        }
    }

    /// Asserts the server still answers `/healthz` with 200.
    #[track_caller]
    pub fn assert_healthy(&self) -> impl Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let resp = self.get("/healthz").await;
            assert_eq!(
                resp.status, 200,
                "healthz after the request at {caller}: {resp:?}"
            );
        }
    }
}

/// `id` of a job object as a string.
#[track_caller]
pub fn id_of(job: &Value) -> String {
    job["id"]
        .as_str()
        .unwrap_or_else(|| panic!("job without id: {job}"))
        .to_string()
}
