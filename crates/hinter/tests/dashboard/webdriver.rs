//! Just enough of the W3C WebDriver protocol (JSON over HTTP, with the reqwest the tests
//! already use) to drive a headless Chromium through `chromedriver`: a session, navigation,
//! elements by CSS selector, clicks, typing, text, scripts and screenshots.
//!
//! [`Browser::start`] starts `chromedriver` on a free port for one test (killed by its pid
//! when the [`Browser`] is dropped, after the session is ended so Chromium exits too).

use crate::support::{free_port, ChildGuard, TestDir, POLL};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long conditions on the page are waited for.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Chromium and its driver, or why they cannot be used.
pub fn find_browser() -> Result<(PathBuf, PathBuf), String> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("no chromium on PATH (apt-get install chromium chromium-driver)")?;
    let driver = on_path(&["chromedriver"])
        .ok_or("no chromedriver on PATH (apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// Where the screenshots go: `target/dashboard-screenshots/` (CI keeps it as an artifact).
pub fn screenshot_dir() -> PathBuf {
    // The test binary is target/<profile>/deps/dashboard-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("creating the screenshot folder");
    dir
}

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    driver_addr: String,
    session_id: String,
    _driver: ChildGuard,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium session with a 1280×900 window.
    pub async fn start(dir: &TestDir, chromium: &Path, driver: &Path) -> Browser {
        let port = free_port();
        let mut command = Command::new(driver);
        command.arg(format!("--port={port}"));
        let guard = ChildGuard::spawn(dir, "chromedriver", &mut command);
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            if let Ok(answer) = http.get(format!("{base}/status")).send().await {
                if let Ok(status) = answer.json::<Value>().await {
                    if status["value"]["ready"] == json!(true) {
                        break;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start:\n{}",
                guard.log()
            );
            tokio::time::sleep(POLL).await;
        }
        let profile = dir.path().join("chromium-profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--no-first-run", "--no-default-browser-check",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session answer");
        let session_id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}\n{}", guard.log()))
            .to_string();
        Browser {
            http,
            session: format!("{base}/session/{session_id}"),
            driver_addr: format!("127.0.0.1:{port}"),
            session_id,
            _driver: guard,
        }
    }

    /// A WebDriver command; `Err` with the WebDriver error and message.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        match answer["value"]["error"].as_str() {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method.clone(), path, body)
            .await
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page; its return value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": args}))
            .await
    }

    /// Runs `script`, which calls `arguments[arguments.length - 1]` with its answer.
    pub async fn script_async(&self, script: &str, args: Value) -> Value {
        self.post("/execute/async", json!({"script": script, "args": args}))
            .await
    }

    /// The ids of the elements matching `css` (none: empty).
    pub async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until an element matches `css`; its id.
    pub async fn wait_element(&self, css: &str) -> String {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            if let Some(first) = self.find_all(css).await.into_iter().next() {
                return first;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css:?} on the page within {PAGE_TIMEOUT:?}; the page shows:\n{}",
                self.body_text().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
        self.script(script, json!([css]))
            .await
            .as_str()
            .map(str::to_string)
    }

    /// Waits until the first element matching `css` has a text `done` accepts; the text.
    pub async fn wait_text(&self, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let text = self.text_of(css).await;
            if let Some(text) = text.as_deref().filter(|t| done(t)) {
                return text.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{css:?} did not show {what} within {PAGE_TIMEOUT:?} (it shows {text:?}); the page:\n{}",
                self.body_text().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The page's visible text, for failure messages.
    pub async fn body_text(&self) -> String {
        self.script(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Clicks the first element matching `css`, once there is one. The page may redraw it
    /// between finding and clicking (a live refresh): then it is found again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let element = self.wait_element(css).await;
            let path = format!("/element/{element}/click");
            match self
                .try_call(reqwest::Method::POST, &path, Some(json!({})))
                .await
            {
                Ok(_) => return,
                Err(e) if e.starts_with("stale element") && Instant::now() < deadline => {}
                Err(e) => panic!("clicking {css:?}: {e}"),
            }
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.wait_element(css).await;
        self.post(&format!("/element/{element}/value"), json!({"text": text}))
            .await;
    }

    /// Accepts the open `confirm()` dialog, once there is one.
    pub async fn accept_alert(&self) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            match self
                .try_call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
                .await
            {
                Ok(_) => return,
                Err(e) if e.starts_with("no such alert") && Instant::now() < deadline => {
                    tokio::time::sleep(POLL).await
                }
                Err(e) => panic!("accepting the dialog: {e}"),
            }
        }
    }

    /// Sets the window's size (a phone: 390×844).
    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await;
    }

    /// Makes the page prefer a dark (or light) color scheme, through the DevTools protocol.
    pub async fn color_scheme(&self, scheme: &str) {
        self.post(
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setEmulatedMedia",
                   "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]}}),
        )
        .await;
    }

    /// Saves a screenshot of the window as `<screenshot_dir>/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let bytes = base64_decode(encoded.as_str().expect("a base64 screenshot"));
        let path = screenshot_dir().join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    /// Ends the session (so Chromium exits) before the driver is killed; blocking, short.
    fn drop(&mut self) {
        let Ok(mut stream) = std::net::TcpStream::connect(&self.driver_addr) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            self.session_id, self.driver_addr
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
        }
    }
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let Some(v) = value(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGludGVy"), b"hinter");
    assert_eq!(base64_decode("aGludA=="), b"hint");
    assert_eq!(base64_decode("aGluLg=="), b"hin.");
}
