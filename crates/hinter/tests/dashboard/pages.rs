//! The dashboard's pages in a browser: counts, pausing a queue, retrying a dead job, live
//! progress, a read-only token, CSRF.

use crate::support::pg::cannot_run;
use crate::support::{hinter_command, id_of, wait_until, Server, TestDir};
use crate::webdriver::{find_browser, Browser, PAGE_TIMEOUT};
use serde_json::{json, Value};

/// One browser at a time: Chromium is heavy, and the machine may be shared.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server, a browser, and what the test needs to call the API itself.
struct Setup {
    // Dropped in this order: the browser, then the server, then the files.
    browser: Browser,
    _server: Server,
    dir: TestDir,
    base: String,
    /// The admin token of a server that has tokens; `None`: an open server.
    admin: Option<String>,
    http: reqwest::Client,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

/// `hinter tokens create NAME --scope SCOPES --data-dir DIR`: the secret.
fn create_token(dir: &TestDir, name: &str, scopes: &str) -> String {
    let output = hinter_command()
        .args(["tokens", "create", name, "--scope", scopes, "--data-dir"])
        .arg(dir.data_dir())
        .output()
        .expect("running hinter tokens create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    stdout.lines().last().expect("the token").trim().to_string()
}

/// A server (with an admin token when `tokens`) and a browser; `None` when no browser is
/// installed (a note; a failure under CI).
async fn setup(name: &str, tokens: bool) -> Option<Setup> {
    let (chromium, driver) = match find_browser() {
        Ok(found) => found,
        Err(why) => {
            cannot_run(&format!("dashboard browser test {name}"), &why);
            return None;
        }
    };
    let one_at_a_time = BROWSERS.lock().await;
    let dir = TestDir::new(name);
    let server = Server::start(&dir, &[]).await;
    let admin = tokens.then(|| create_token(&dir, "ops", "admin"));
    let browser = Browser::start(&dir, &chromium, &driver).await;
    let setup = Setup {
        browser,
        base: server.api.base.clone(),
        _server: server,
        dir,
        admin,
        http: reqwest::Client::new(),
        _one_at_a_time: one_at_a_time,
    };
    if let Some(admin) = &setup.admin {
        // The server reads new tokens at once; wait until the open API has closed.
        let (base, http, admin) = (setup.base.clone(), setup.http.clone(), admin.clone());
        wait_until(PAGE_TIMEOUT, "the admin token works", || {
            let (base, http, admin) = (base.clone(), http.clone(), admin.clone());
            async move {
                let open = http.get(format!("{base}/api/v1/queues")).send().await;
                let authed = http
                    .get(format!("{base}/api/v1/queues"))
                    .bearer_auth(&admin)
                    .send()
                    .await;
                matches!((open, authed), (Ok(o), Ok(a)) if o.status() == 401 && a.status() == 200)
            }
        })
        .await;
    }
    Some(setup)
}

impl Setup {
    /// Calls the API as the admin (or openly); the status and the JSON body.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(admin) = &self.admin {
            request = request.bearer_auth(admin);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn enqueue(&self, spec: Value) -> String {
        let (status, body) = self
            .call(reqwest::Method::POST, "/api/v1/jobs", Some(spec))
            .await;
        assert_eq!(status, 201, "{body}");
        id_of(&body["job"])
    }

    /// Leases at most one job of `queue` without waiting.
    async fn lease(&self, queue: &str) -> Vec<Value> {
        let request = json!({"queues": [queue], "worker_id": "browser-test", "max": 1,
                             "lease": "5m", "wait": "0s"});
        let (status, body) = self
            .call(reqwest::Method::POST, "/api/v1/leases", Some(request))
            .await;
        assert_eq!(status, 200, "{body}");
        body["jobs"].as_array().expect("jobs").clone()
    }

    /// A job of `queue` that failed its only attempt with `error`: dead. Its id.
    async fn dead_job(&self, queue: &str, error: &str) -> String {
        let id = self
            .enqueue(json!({"job": "report", "queue": queue, "max_attempts": 1,
                                     "payload": {"day": "2026-11-29"}}))
            .await;
        let leased = self.lease(queue).await;
        assert_eq!(leased.len(), 1);
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{id}/fail"),
                Some(json!({"lease_token": leased[0]["lease_token"], "error": error})),
            )
            .await;
        assert_eq!(
            (status, body["state"].as_str()),
            (200, Some("dead")),
            "{body}"
        );
        id
    }

    async fn job_state(&self, id: &str) -> String {
        let (_, job) = self
            .call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None)
            .await;
        job["state"].as_str().unwrap_or_default().to_string()
    }

    async fn queue(&self, name: &str) -> Value {
        let (_, body) = self
            .call(reqwest::Method::GET, "/api/v1/queues", None)
            .await;
        body["queues"]
            .as_array()
            .and_then(|all| all.iter().find(|q| q["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    async fn open(&self, route: &str) {
        self.browser.goto(&format!("{}/{route}", self.base)).await;
    }

    /// Logs in on the page with `token`.
    async fn log_in(&self, token: &str) {
        self.browser.wait_element("#login-token").await;
        self.browser.type_into("#login-token", token).await;
        self.browser.click("#login-form button[type=submit]").await;
        self.browser.wait_element("#who-name").await;
    }
}

fn queue_cell(queue: &str, state: &str) -> String {
    format!("tr[data-queue=\"{queue}\"] td[data-state=\"{state}\"]")
}

/// The overview shows each queue's counts per state, and follows new jobs without a reload;
/// every page is photographed (also on a phone and in dark mode).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_shows_a_queues_counts() {
    let Some(s) = setup("overview", false).await else {
        return;
    };
    for n in 0..3 {
        s.enqueue(json!({"job": "send", "queue": "mail", "payload": {"n": n}}))
            .await;
    }
    assert_eq!(s.lease("mail").await.len(), 1);
    let dead = s.dead_job("reports", "the printer is on fire").await;
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/api/v1/schedules",
            Some(json!({"name": "nightly", "cron": "0 3 * * *", "job": "report", "queue": "reports"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    s.open("").await;
    s.browser
        .wait_text(&queue_cell("mail", "queued"), "2 queued", |t| t == "2")
        .await;
    assert_eq!(
        s.browser
            .text_of(&queue_cell("mail", "running"))
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        s.browser
            .text_of(&queue_cell("reports", "dead"))
            .await
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        s.browser
            .text_of("tr[data-queue=\"mail\"] [data-paused]")
            .await
            .as_deref(),
        Some("active")
    );
    // Live: a new job shows up in the counts without a reload.
    s.browser
        .script("window.hinterTestMarker = 'same page';", json!([]))
        .await;
    s.enqueue(json!({"job": "send", "queue": "mail"})).await;
    s.browser
        .wait_text(&queue_cell("mail", "queued"), "3 queued", |t| t == "3")
        .await;
    let marker = s
        .browser
        .script("return window.hinterTestMarker || null;", json!([]))
        .await;
    assert_eq!(marker, json!("same page"), "the page was reloaded");
    s.browser.screenshot("overview").await;

    s.open("#/jobs?queue=mail").await;
    s.browser.wait_element("#jobs tbody tr").await;
    s.browser.screenshot("jobs").await;
    // Filter by state, then find a job by its id.
    s.open("#/jobs?state=dead").await;
    s.browser
        .wait_element(&format!("#jobs tr[data-job=\"{dead}\"]"))
        .await;
    assert_eq!(
        s.browser.find_all("#jobs tbody tr").await.len(),
        1,
        "only the dead job"
    );
    s.browser.type_into("#job-search", &dead).await;
    s.browser.click("#job-filters button[type=submit]").await;
    s.browser.wait_element("#job-id").await;
    assert_eq!(
        s.browser.text_of("#job-id").await.as_deref(),
        Some(dead.as_str())
    );
    s.open(&format!("#/jobs/{dead}")).await;
    s.browser
        .wait_text("#job-state", "dead", |t| t == "dead")
        .await;
    assert!(s
        .browser
        .body_text()
        .await
        .contains("the printer is on fire"));
    s.browser.screenshot("job").await;
    s.open("#/dead").await;
    s.browser
        .wait_element(&format!("#dead tr[data-job=\"{dead}\"]"))
        .await;
    s.browser.screenshot("dead").await;
    s.open("#/workers").await;
    s.browser
        .wait_text("#leader", "the leader", |t| t.starts_with("Leader"))
        .await;
    s.browser.screenshot("workers").await;
    s.open("#/schedules").await;
    s.browser
        .wait_element("#schedules tr[data-schedule=\"nightly\"]")
        .await;
    s.browser.screenshot("schedules").await;

    // A phone: the page fits the screen's width (wide tables scroll inside their box).
    s.browser.resize(390, 844).await;
    s.open("").await;
    s.browser.wait_element(&queue_cell("mail", "queued")).await;
    let overflow = s
        .browser
        .script(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page is wider than a phone: {overflow}"
    );
    s.browser.screenshot("overview-phone").await;
    s.browser.resize(1280, 900).await;
    // Dark mode: the page follows the system's preference.
    s.browser.color_scheme("dark").await;
    s.open("#/jobs").await;
    s.browser.wait_element("#jobs tbody tr").await;
    let background = s
        .browser
        .script(
            "return getComputedStyle(document.body).backgroundColor;",
            json!([]),
        )
        .await;
    assert_eq!(background, json!("rgb(20, 22, 26)"), "dark background");
    s.browser.screenshot("jobs-dark").await;
}

/// The pause button of a queue pauses it: nothing of it is leased until it is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_from_the_page_stops_leases() {
    let Some(s) = setup("pause", false).await else {
        return;
    };
    s.enqueue(json!({"job": "resize", "queue": "media"})).await;
    s.open("").await;
    s.browser
        .click("button[data-action=\"pause\"][data-queue=\"media\"]")
        .await;
    s.browser
        .wait_text("tr[data-queue=\"media\"] [data-paused]", "paused", |t| {
            t == "paused"
        })
        .await;
    assert_eq!(s.queue("media").await["paused"], json!(true));
    assert!(
        s.lease("media").await.is_empty(),
        "a paused queue leased a job"
    );
    s.browser.screenshot("overview-paused").await;
    s.browser
        .click("button[data-action=\"resume\"][data-queue=\"media\"]")
        .await;
    s.browser
        .wait_text("tr[data-queue=\"media\"] [data-paused]", "active", |t| {
            t == "active"
        })
        .await;
    assert_eq!(
        s.lease("media").await.len(),
        1,
        "the resumed queue leases again"
    );
}

/// The retry button on a dead job's page queues it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_job_from_its_page_queues_it_again() {
    let Some(s) = setup("retry", false).await else {
        return;
    };
    let id = s.dead_job("reports", "disk full").await;
    s.open(&format!("#/jobs/{id}")).await;
    s.browser
        .wait_text("#job-state", "dead", |t| t == "dead")
        .await;
    assert!(
        s.browser.body_text().await.contains("disk full"),
        "the error is shown"
    );
    s.browser.click("#job-retry").await;
    s.browser
        .wait_text("#job-state", "queued", |t| t == "queued")
        .await;
    assert_eq!(s.job_state(&id).await, "queued");
    assert_eq!(
        s.lease("reports").await.len(),
        1,
        "the retried job runs again"
    );

    // The dead list retries the jobs selected, and only those.
    let (a, b, c) = (
        s.dead_job("reports", "one").await,
        s.dead_job("reports", "two").await,
        s.dead_job("reports", "three").await,
    );
    s.open("#/dead").await;
    for id in [&a, &c] {
        s.browser
            .click(&format!("#dead tr[data-job=\"{id}\"] input.pick"))
            .await;
    }
    s.browser.click("#dead-retry-selected").await;
    s.browser
        .wait_text(".flash", "the retry", |t| t.contains("2 done"))
        .await;
    assert_eq!(
        (
            s.job_state(&a).await,
            s.job_state(&b).await,
            s.job_state(&c).await
        ),
        ("queued".into(), "dead".into(), "queued".into())
    );
    s.browser
        .wait_element(&format!("#dead tr[data-job=\"{b}\"]"))
        .await;
    assert!(s
        .browser
        .find_all(&format!("#dead tr[data-job=\"{a}\"]"))
        .await
        .is_empty());

    // Delete selected, after the browser's confirmation.
    s.browser
        .click(&format!("#dead tr[data-job=\"{b}\"] input.pick"))
        .await;
    s.browser.click("#dead-delete-selected").await;
    s.browser.accept_alert().await;
    s.browser
        .wait_text(".flash", "the delete", |t| t.starts_with("Delete: 1 done"))
        .await;
    let (status, _) = s
        .call(reqwest::Method::GET, &format!("/api/v1/jobs/{b}"), None)
        .await;
    assert_eq!(status, 404, "the deleted job is gone");
}

/// A running job's page follows its progress as the worker reports it, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_jobs_progress_updates_live() {
    let Some(s) = setup("progress", false).await else {
        return;
    };
    let id = s
        .enqueue(json!({"job": "transcode", "queue": "media", "payload": {"file": "a.mov"}}))
        .await;
    let leased = s.lease("media").await;
    let token = leased[0]["lease_token"].clone();
    s.open(&format!("#/jobs/{id}")).await;
    s.browser
        .wait_text("#job-state", "running", |t| t == "running")
        .await;
    s.browser
        .script("window.hinterTestMarker = 'same page';", json!([]))
        .await;
    for (percent, message) in [(42, "frame 420 of 1000"), (77, "frame 770 of 1000")] {
        let report = json!({"lease_token": token, "progress": {"percent": percent, "message": message,
                                         "at": "2026-11-29T18:00:00Z"},
                            "logs": [{"at": "2026-11-29T18:00:00Z", "stream": "stdout",
                                      "line": format!("at {percent}%")}]});
        let (status, body) = s
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{id}/report"),
                Some(report),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let label = s
            .browser
            .wait_text("#job-progress .label", &format!("{percent}%"), |t| {
                t.starts_with(&format!("{percent}%"))
            })
            .await;
        assert!(label.contains(message), "{label}");
    }
    let marker = s
        .browser
        .script("return window.hinterTestMarker || null;", json!([]))
        .await;
    assert_eq!(marker, json!("same page"), "the page was reloaded");
    s.browser.wait_element("#timeline li .state-progress").await;
    s.browser.screenshot("job-running").await;
    // The finish shows too.
    let (status, _) = s
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/jobs/{id}/complete"),
            Some(json!({"lease_token": token, "result": {"frames": 1000}})),
        )
        .await;
    assert_eq!(status, 200);
    s.browser
        .wait_text("#job-state", "succeeded", |t| t == "succeeded")
        .await;
    s.browser
        .wait_text("#job-result", "the result", |t| t.contains("1000"))
        .await;
}

/// A token with `read` only sees the pages but no action button; an admin sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_sees_no_action_buttons() {
    let Some(s) = setup("read-only", true).await else {
        return;
    };
    let reader = create_token(&s.dir, "viewer", "read");
    let dead = s.dead_job("reports", "timeout").await;
    s.enqueue(json!({"job": "send", "queue": "mail"})).await;
    s.open("").await;
    s.browser.wait_element("#login-token").await;
    s.browser.screenshot("login").await;
    s.log_in(&reader).await;
    s.browser
        .wait_text(&queue_cell("mail", "queued"), "1 queued", |t| t == "1")
        .await;
    assert!(s
        .browser
        .text_of("#who-name")
        .await
        .unwrap_or_default()
        .contains("viewer"));
    assert!(
        // The charts' 1 h / 24 h switch only changes the view.
        s.browser
            .find_all("main button:not(.toggle)")
            .await
            .is_empty(),
        "buttons on the overview"
    );
    s.browser.screenshot("overview-read-only").await;
    s.open(&format!("#/jobs/{dead}")).await;
    s.browser
        .wait_text("#job-state", "dead", |t| t == "dead")
        .await;
    assert!(
        s.browser.find_all("main button").await.is_empty(),
        "buttons on the job page"
    );
    s.open("#/dead").await;
    s.browser
        .wait_element(&format!("#dead tr[data-job=\"{dead}\"]"))
        .await;
    assert!(s
        .browser
        .find_all("main button, main input.pick")
        .await
        .is_empty());

    // The same pages as an admin have them.
    s.browser.click("#logout").await;
    let admin = s.admin.clone().expect("admin token");
    s.log_in(&admin).await;
    s.open("").await;
    s.browser
        .wait_element("button[data-action=\"pause\"][data-queue=\"mail\"]")
        .await;
    s.open(&format!("#/jobs/{dead}")).await;
    s.browser.wait_element("#job-retry").await;
}

/// A cookie-authenticated request that changes something without the CSRF token is
/// refused: a plain HTML form posted from the page, and a fetch without the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_without_the_csrf_token_is_refused() {
    let Some(s) = setup("csrf", true).await else {
        return;
    };
    s.enqueue(json!({"job": "send", "queue": "mail"})).await;
    s.open("").await;
    let admin = s.admin.clone().expect("admin token");
    s.log_in(&admin).await;
    s.browser
        .wait_element("button[data-action=\"pause\"][data-queue=\"mail\"]")
        .await;

    let fetched = s
        .browser
        .script_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/queues/mail/pause', {method: 'POST', credentials: 'same-origin'})
               .then(r => r.json().then(b => done([r.status, b])))
               .catch(e => done(['error', String(e)]));",
            json!([]),
        )
        .await;
    assert_eq!(fetched[0], json!(403), "{fetched}");
    assert_eq!(fetched[1]["error"]["code"], json!("csrf"), "{fetched}");

    s.browser
        .script(
            "const form = document.createElement('form');
             form.method = 'post';
             form.action = '/api/v1/queues/mail/pause';
             document.body.append(form);
             form.submit();",
            json!([]),
        )
        .await;
    let refused = s
        .browser
        .wait_text("body", "the csrf refusal", |t| t.contains("\"csrf\""))
        .await;
    assert!(refused.contains("X-CSRF-Token"), "{refused}");
    s.browser.screenshot("csrf-refused").await;
    assert_eq!(
        s.queue("mail").await["paused"],
        json!(false),
        "the form paused the queue"
    );

    // The page's own button sends the token and works.
    s.open("").await;
    s.browser
        .click("button[data-action=\"pause\"][data-queue=\"mail\"]")
        .await;
    wait_until(PAGE_TIMEOUT, "the queue paused by the page", || async {
        s.queue("mail").await["paused"] == json!(true)
    })
    .await;
}

/// Reads `attribute` of the first element matching `css` until `done` accepts it; its value.
async fn wait_attribute(
    s: &Setup,
    css: &str,
    attribute: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + PAGE_TIMEOUT;
    loop {
        let value = s
            .browser
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
                json!([css, attribute]),
            )
            .await;
        if let Some(value) = value.as_str().filter(|v| done(v)) {
            return value.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css} [{attribute}] is {value} after {PAGE_TIMEOUT:?}; the page:\n{}",
            s.browser.body_text().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The overview's charts (`GET /api/v1/stats`) show a workload: 4 jobs succeeded and 2 dead,
/// as bars with their counts in titles; the 24 h switch and the queue choice redraw them; the
/// charts fit a phone and are photographed in dark mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_charts_show_a_workload() {
    let Some(s) = setup("charts", false).await else {
        return;
    };
    for n in 0..4 {
        s.enqueue(json!({"job": "send", "queue": "charts-ok", "payload": {"n": n}}))
            .await;
        let leased = s.lease("charts-ok").await;
        let id = id_of(&leased[0]);
        let (status, body) = s
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/jobs/{id}/complete"),
                Some(json!({"lease_token": leased[0]["lease_token"], "result": n})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    s.dead_job("charts-bad", "no paper").await;
    s.dead_job("charts-bad", "no ink").await;

    s.open("").await;
    wait_attribute(&s, "#chart-succeeded", "data-succeeded", |v| v == "4").await;
    wait_attribute(&s, "#chart-failures", "data-dead", |v| v == "2").await;
    assert_eq!(
        wait_attribute(&s, "#chart-failures", "data-failed", |_| true).await,
        "2"
    );
    assert_eq!(
        wait_attribute(&s, "#chart-succeeded", "data-buckets", |_| true).await,
        "60"
    );
    // Each bar tells its counts; the workload's minutes hold them all.
    let titles = s
        .browser
        .script(
            "return [...document.querySelectorAll('#chart-succeeded .bar title')].map(t => t.textContent);",
            json!([]),
        )
        .await;
    let titles: Vec<String> = serde_json::from_value(titles).expect("titles");
    let counted: u64 = titles
        .iter()
        .filter_map(|t| {
            t.rsplit(": ")
                .next()?
                .strip_suffix(" succeeded")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert_eq!(counted, 4, "bar titles: {titles:?}");
    assert_eq!(
        s.browser
            .text_of("#rate-ok")
            .await
            .map(|t| t.parse::<u64>().is_ok()),
        Some(true)
    );
    s.browser.screenshot("overview-charts").await;

    // 24 h: 144 bars of 10 minutes, the same sums.
    s.browser.click("#chart-window-1d").await;
    wait_attribute(&s, "#charts", "data-window", |v| v == "1d").await;
    assert_eq!(
        wait_attribute(&s, "#chart-succeeded", "data-buckets", |_| true).await,
        "144"
    );
    wait_attribute(&s, "#chart-succeeded", "data-succeeded", |v| v == "4").await;
    assert_eq!(
        wait_attribute(&s, "#chart-window-1d", "aria-pressed", |_| true).await,
        "true"
    );
    // One queue: the dead jobs' queue has no success.
    s.browser
        .script(
            "const select = document.querySelector('#chart-queue');
             select.value = 'charts-bad';
             select.dispatchEvent(new Event('change'));",
            json!([]),
        )
        .await;
    wait_attribute(&s, "#charts", "data-queue", |v| v == "charts-bad").await;
    assert_eq!(
        wait_attribute(&s, "#chart-succeeded", "data-succeeded", |_| true).await,
        "0"
    );
    assert_eq!(
        wait_attribute(&s, "#chart-failures", "data-dead", |_| true).await,
        "2"
    );

    // A phone: the charts fit its width.
    s.browser.resize(390, 844).await;
    s.open("").await;
    wait_attribute(&s, "#chart-failures", "data-dead", |v| v == "2").await;
    let overflow = s
        .browser
        .script(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            json!([]),
        )
        .await;
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page is wider than a phone: {overflow}"
    );
    s.browser.screenshot("overview-charts-phone").await;
    s.browser.resize(1280, 900).await;
    s.browser.color_scheme("dark").await;
    s.open("").await;
    wait_attribute(&s, "#chart-failures", "data-dead", |v| v == "2").await;
    // The bars take their colours from the style sheet (dark mode's green).
    let fill = s
        .browser
        .script(
            "const r = document.querySelector('#chart-succeeded rect.succeeded'); return r ? getComputedStyle(r).fill : null;",
            json!([]),
        )
        .await;
    assert_eq!(
        fill,
        json!("rgb(86, 211, 100)"),
        "the bars' colour in dark mode"
    );
    s.browser.screenshot("overview-charts-dark").await;
}

/// A token limited to two queues sees both in the jobs list, the dead list and the overview,
/// and nothing of a third queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_two_queues_sees_both() {
    let Some(s) = setup("two-queues", true).await else {
        return;
    };
    let output = hinter_command()
        .args(["tokens", "create", "two", "--scope", "read"])
        .args(["--queue", "first-q", "--queue", "second-q", "--data-dir"])
        .arg(s.dir.data_dir())
        .output()
        .expect("running hinter tokens create");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let limited = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .expect("the token")
        .trim()
        .to_string();
    let first = s.dead_job("first-q", "one").await;
    let second = s.dead_job("second-q", "two").await;
    let other = s.dead_job("other-q", "three").await;
    s.enqueue(json!({"job": "send", "queue": "second-q"})).await;

    s.open("").await;
    s.log_in(&limited).await;
    s.browser
        .wait_text(&queue_cell("second-q", "queued"), "1 queued", |t| t == "1")
        .await;
    s.browser.wait_element(&queue_cell("first-q", "dead")).await;
    assert!(s
        .browser
        .find_all("tr[data-queue=\"other-q\"]")
        .await
        .is_empty());

    s.open("#/jobs").await;
    s.browser
        .wait_element(&format!("#jobs tr[data-job=\"{second}\"]"))
        .await;
    s.browser
        .wait_element(&format!("#jobs tr[data-job=\"{first}\"]"))
        .await;
    assert_eq!(s.browser.find_all("#jobs tbody tr").await.len(), 3);
    s.open("#/dead").await;
    s.browser
        .wait_element(&format!("#dead tr[data-job=\"{first}\"]"))
        .await;
    s.browser
        .wait_element(&format!("#dead tr[data-job=\"{second}\"]"))
        .await;
    assert!(s
        .browser
        .find_all(&format!("tr[data-job=\"{other}\"]"))
        .await
        .is_empty());
    s.browser.screenshot("dead-two-queues").await;
}
