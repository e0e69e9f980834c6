// `GET /api/v1/events` as Server-Sent Events, served by `hinter_server::serve` on a real
// loopback socket over a real store. Included by `sse.rs` (SQLite) and `sse_postgres.rs`
// (PostgreSQL), which each provide `backend::open`.

use chrono::Utc;
use hinter_core::{Backend, NewJob, Store};
use hinter_server::{AppState, ConnLimits, ServerConfig};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);

struct Server {
    addr: std::net::SocketAddr,
    store: Arc<dyn Backend>,
    ready: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _guard: Box<dyn std::any::Any + Send + Sync>,
}

impl Server {
    async fn start(config: ServerConfig, limits: ConnLimits) -> Option<Server> {
        Self::start_with(config, limits, None).await
    }

    /// As `serve` runs it: one follower of the log feeds the streams through a hub that
    /// keeps `hub_batches` batches.
    async fn start_fed(config: ServerConfig, hub_batches: usize) -> Option<Server> {
        Self::start_with(config, ConnLimits::default(), Some(hub_batches)).await
    }

    async fn start_with(
        config: ServerConfig,
        limits: ConnLimits,
        hub_batches: Option<usize>,
    ) -> Option<Server> {
        let (store, guard) = backend::open().await?;
        let metrics = hinter_server::Metrics::new();
        let hub = match hub_batches {
            None => hinter_server::EventHub::default(),
            Some(batches) => {
                let hub = hinter_server::EventHub::with_capacity(batches);
                hinter_server::live::follow_log(
                    store.clone() as Arc<dyn Store>,
                    metrics.clone(),
                    hub.clone(),
                    Arc::new(hinter_core::SystemClock),
                )
                .await
                .expect("following the log");
                hub
            }
        };
        let ready = Arc::new(AtomicBool::new(true));
        let state = AppState {
            store: store.clone() as Arc<dyn Store>,
            cluster: store.clone() as Arc<dyn hinter_core::Cluster>,
            clock: Arc::new(hinter_core::SystemClock),
            definitions: Default::default(),
            config: Arc::new(config),
            ready: ready.clone(),
            metrics,
            hub,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hinter_server::serve(listener, state, limits, async move {
            let _ = stopped.await;
        }));
        Some(Server {
            addr,
            store,
            ready,
            stop: Some(stop),
            task: Some(task),
            _guard: guard,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server as `serve` does on SIGTERM: not ready, then the listener's stop.
    async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        self.ready.store(false, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the server stopped within 30 s")
                .expect("the server task");
        }
        started.elapsed()
    }
}

fn config(max_event_streams: usize, keep_alive: Duration) -> ServerConfig {
    ServerConfig {
        max_event_streams,
        event_keep_alive: keep_alive,
        ..ServerConfig::default()
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// One SSE frame: its fields, or a comment.
#[derive(Debug, Default, Clone, PartialEq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    retry: Option<String>,
    comment: Option<String>,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().unwrap_or("null")).expect("data is JSON")
    }
}

/// An open event stream, read frame by frame.
struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    /// Opens `GET /api/v1/events{query}` as an event stream; panics unless 200.
    async fn open(server: &Server, query: &str, last_event_id: Option<&str>) -> Stream {
        let response = request(server, query, last_event_id).await;
        assert_eq!(response.status(), 200, "{:?}", response.headers());
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        Stream {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` when the stream ended; panics after `within`.
    async fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in block.lines().filter(|line| !line.is_empty()) {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                    match field {
                        "" => frame.comment = Some(value),
                        "id" => frame.id = Some(value),
                        "event" => frame.event = Some(value),
                        "data" => frame.data = Some(value),
                        "retry" => frame.retry = Some(value),
                        other => panic!("unknown SSE field {other:?} in {block:?}"),
                    }
                }
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no SSE frame within {within:?}; have {:?}", self.buffer))
                .expect("reading the stream");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => return None,
            }
        }
    }

    /// The next event: a frame with an `event:` field (keep-alives and `retry:` skipped).
    async fn event(&mut self, within: Duration) -> Frame {
        loop {
            let frame = self.frame(within).await.expect("the stream ended");
            if frame.event.is_some() {
                return frame;
            }
        }
    }

    /// Job events until `n` have arrived (skipping comments).
    async fn events(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.event(WAIT).await);
        }
        out
    }
}

async fn request(server: &Server, query: &str, last_event_id: Option<&str>) -> reqwest::Response {
    let mut request = client()
        .get(server.url(&format!("/api/v1/events{query}")))
        .header("accept", "text/event-stream");
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("GET /api/v1/events")
}

/// Inserts `n` jobs in `queue` in one batch (so their events' ids are consecutive on both
/// backends) and returns their ids.
async fn insert(store: &dyn Store, queue: &str, n: usize) -> Vec<uuid::Uuid> {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| NewJob::new("sse", json!({ "i": i })).queue(queue))
        .collect();
    let ids = jobs.iter().map(|j| j.id).collect();
    store
        .job_insert_many(jobs, Utc::now())
        .await
        .expect("insert");
    ids
}

/// Every event of the log (read by the store), once at least `n` are readable: on
/// PostgreSQL a commit's entries become readable once earlier transactions ended.
async fn logged(store: &dyn Store, n: usize) -> Vec<hinter_core::JobEvent> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .events_read(after, &hinter_core::EventFilter::default(), 10_000)
                .await
                .expect("events_read");
            let full = page.events.len() == 10_000;
            events.extend(page.events);
            after = page.next_after;
            if !full {
                break;
            }
        }
        if events.len() >= n || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The stream starts with `retry: 2000`; without `after` or `Last-Event-ID` it sends only
/// what happens from now on; `after=0` sends the whole log; `Last-Event-ID` wins over
/// `after`; each event is `id`, `event: <kind>` and the JSON API's object; filters apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_starts_where_asked_and_frames_each_event() {
    let Some(server) = Server::start(config(10, Duration::from_secs(15)), ConnLimits::default())
        .await
    else {
        return;
    };
    let store = &*server.store;
    let before = insert(store, "sse-a", 2).await;
    let old = logged(store, 2).await;

    let mut from_now = Stream::open(&server, "", None).await;
    let first = from_now.frame(WAIT).await.expect("a first frame");
    assert_eq!(first.retry.as_deref(), Some("2000"), "{first:?}");
    let mut from_start = Stream::open(&server, "?after=0", None).await;
    let mut filtered = Stream::open(&server, "?after=0&queue=sse-b", None).await;
    let mut resumed = Stream::open(&server, "?after=0", Some(&old[0].id.to_string())).await;

    let later = insert(store, "sse-b", 1).await;
    let got = from_now.events(1).await;
    assert_eq!(got[0].event.as_deref(), Some("created"));
    assert_eq!(got[0].json()["job_id"], json!(later[0].to_string()));

    let all = from_start.events(3).await;
    let json_page: Value = client()
        .get(server.url("/api/v1/events?after=0"))
        .send()
        .await
        .expect("JSON events")
        .json()
        .await
        .expect("a JSON page");
    let page = json_page["events"].as_array().expect("events");
    assert_eq!(page.len(), 3);
    for (frame, object) in all.iter().zip(page) {
        assert_eq!(frame.retry, None);
        assert_eq!(frame.id.as_deref(), Some(object["id"].to_string().as_str()));
        assert_eq!(frame.event.as_deref(), object["kind"].as_str());
        assert_eq!(&frame.json(), object, "data is the JSON API's event");
    }
    assert_eq!(all[0].json()["job_id"], json!(before[0].to_string()));

    let only_b = filtered.events(1).await;
    assert_eq!(only_b[0].json()["queue"], "sse-b");
    let after_first = resumed.events(2).await;
    assert_eq!(
        after_first.iter().map(|f| f.json()["id"].clone()).collect::<Vec<_>>(),
        page[1..].iter().map(|e| e["id"].clone()).collect::<Vec<_>>(),
        "Last-Event-ID wins over after=0"
    );

    // Bad resume points are refused, naming them.
    let bad = request(&server, "", Some("x1")).await;
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.expect("an error body");
    assert!(
        body["error"]["message"].as_str().unwrap_or("").contains("Last-Event-ID"),
        "{body}"
    );
    assert_eq!(request(&server, "?after=-1", None).await.status(), 400);
    for id in ["-1", "9223372036854775808", "1e3"] {
        let bad = request(&server, "", Some(id)).await;
        assert_eq!(bad.status(), 400, "Last-Event-ID {id:?}");
    }
    // The largest id is a place after everything: the stream opens and waits for more.
    let far = request(&server, "", Some("9223372036854775807")).await;
    assert_eq!(far.status(), 200);
}

/// A reader resuming from an id whose entries were pruned gets one `gap` event naming the
/// lost range before the events still kept; resuming where nothing was lost sends none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resuming_past_pruned_events_sends_a_gap_first() {
    let Some(server) = Server::start(config(10, Duration::from_secs(15)), ConnLimits::default())
        .await
    else {
        return;
    };
    let store = &*server.store;
    insert(store, "sse-gap", 4).await;
    let events = logged(store, 4).await;
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 4);
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "one batch's events are numbered consecutively: {ids:?}"
    );
    // Retention: the two oldest are gone.
    let pruned = store
        .events_prune(Utc::now() + chrono::Duration::hours(1), 2)
        .await
        .expect("events_prune");
    assert_eq!(pruned, 2);

    let mut stream = Stream::open(&server, "", Some(&ids[0].to_string())).await;
    assert_eq!(stream.frame(WAIT).await.expect("retry").retry.as_deref(), Some("2000"));
    let gap = stream.event(WAIT).await;
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
    assert_eq!(gap.json()["after"], json!(ids[0]));
    assert_eq!(gap.json()["oldest_kept"], json!(ids[2]));
    assert_eq!(gap.id, Some((ids[2] - 1).to_string()), "a reconnect resumes past the gap");
    let kept = stream.events(2).await;
    assert_eq!(
        kept.iter().map(|f| f.id.clone().unwrap_or_default()).collect::<Vec<_>>(),
        vec![ids[2].to_string(), ids[3].to_string()]
    );

    // From the last pruned id: nothing between it and the oldest kept was lost.
    let mut no_gap = Stream::open(&server, &format!("?after={}", ids[1]), None).await;
    no_gap.frame(WAIT).await.expect("retry");
    let next = no_gap.event(WAIT).await;
    assert_eq!(next.event.as_deref(), Some("created"), "{next:?}");
    assert_eq!(next.id, Some(ids[2].to_string()));
}

/// Past `max_event_streams` a stream request gets 503 with Retry-After while JSON requests
/// are still served; a closed stream gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_are_capped_with_503_and_places_come_back() {
    let Some(server) = Server::start(
        config(2, Duration::from_millis(200)),
        ConnLimits::default(),
    )
    .await
    else {
        return;
    };
    let one = Stream::open(&server, "", None).await;
    let _two = Stream::open(&server, "", None).await;
    let refused = request(&server, "", None).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let body: Value = refused.json().await.expect("an error body");
    assert_eq!(body["error"]["code"], "overloaded");
    assert!(
        body["error"]["message"].as_str().unwrap_or("").contains("--max-event-streams"),
        "{body}"
    );
    let json = client()
        .get(server.url("/api/v1/events?after=0"))
        .send()
        .await
        .expect("JSON events");
    assert_eq!(json.status(), 200, "the JSON API is not capped");

    drop(one);
    let deadline = Instant::now() + WAIT;
    loop {
        let again = request(&server, "", None).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 503);
        assert!(Instant::now() < deadline, "a closed stream's place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens an event stream over a raw socket with a tiny receive buffer and never reads it.
async fn unread_stream(server: &Server, query: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut stream = socket.connect(server.addr).await.expect("connect");
    let head = format!(
        "GET /api/v1/events{query} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.expect("send the request");
    stream
}

/// About 5 MB of events: far more than the socket buffers and one page hold.
const FLOOD: usize = 20_000;

async fn flood(store: &dyn Store) -> Vec<hinter_core::JobEvent> {
    let before = logged(store, 0).await.len();
    for _ in 0..(FLOOD / 1000) {
        insert(store, "sse-flood", 1000).await;
    }
    logged(store, before + FLOOD).await
}

/// A client that never reads its stream holds up nobody: while it sits on thousands of
/// events, other requests answer and another stream reads the whole log; a stopping
/// server ends its streams, the read one and the stalled one, and stops within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_an_unread_stream_blocks_nothing_and_shutdown_ends_streams() {
    let Some(mut server) =
        Server::start(config(10, Duration::from_secs(15)), ConnLimits::default()).await
    else {
        return;
    };
    let _stuck = unread_stream(&server, "?after=0").await;
    let all = flood(&*server.store).await;
    assert_eq!(all.len(), FLOOD);

    // Other requests are answered at once.
    let started = Instant::now();
    let health = client().get(server.url("/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), 200);
    let page = client()
        .get(server.url("/api/v1/events?after=0&limit=10"))
        .send()
        .await
        .expect("JSON events");
    assert_eq!(page.status(), 200);
    let enqueued = client()
        .post(server.url("/api/v1/jobs"))
        .json(&json!({"job": "sse", "queue": "sse-other"}))
        .send()
        .await
        .expect("enqueue");
    assert_eq!(enqueued.status(), 201);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // Another stream reads the whole log at its own pace.
    let mut reader = Stream::open(&server, "?after=0&queue=sse-flood", None).await;
    let frames = reader.events(FLOOD).await;
    assert_eq!(
        frames.last().and_then(|f| f.id.clone()),
        Some(all[FLOOD - 1].id.to_string())
    );

    let took = server.stop().await;
    assert!(took < Duration::from_secs(6), "the server took {took:?} to stop");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while reader.frame(WAIT).await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the open stream ended with the server");
}

/// A quiet stream gets a `: keep-alive` comment every `event_keep_alive` and keeps going
/// past the idle timeout; a stream whose client stopped reading is closed once its writes
/// have stalled for the idle timeout, and its place comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_keep_alive_outlives_the_idle_timeout_and_a_stalled_stream_is_closed() {
    let limits = ConnLimits {
        idle_timeout: Duration::from_secs(1),
        ..ConnLimits::default()
    };
    let Some(server) = Server::start(config(2, Duration::from_millis(300)), limits).await else {
        return;
    };
    let mut quiet = Stream::open(&server, "?queue=sse-late", None).await;
    quiet.frame(WAIT).await.expect("retry");
    let started = Instant::now();
    let mut comments = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let frame = quiet
            .frame(Duration::from_secs(2))
            .await
            .expect("the stream goes on");
        assert_eq!(frame.comment.as_deref(), Some("keep-alive"), "{frame:?}");
        comments += 1;
    }
    assert!(comments >= 5, "{comments} keep-alives in 3 s");
    // An event still arrives after three idle timeouts.
    let id = insert(&*server.store, "sse-late", 1).await[0];
    let late = quiet.event(WAIT).await;
    assert_eq!(late.json()["job_id"], json!(id.to_string()));

    let mut stuck = unread_stream(&server, "?after=0").await;
    // The stuck stream and `quiet` fill the cap of 2 until the stuck one is closed.
    flood(&*server.store).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let again = request(&server, "", None).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 503);
        assert!(Instant::now() < deadline, "the stalled stream still holds its place");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The server closed it: reading drains what was sent, then meets the end.
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match stuck.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the stalled connection");
    // `quiet` was never cut meanwhile.
    let id = insert(&*server.store, "sse-late", 1).await[0];
    let last = quiet.event(WAIT).await;
    assert_eq!(last.json()["job_id"], json!(id.to_string()));
}

/// Streams of a server whose one follower feeds them (as `serve` runs): a stream that falls
/// far behind the hub (here it keeps 2 batches) reads the store until it has caught up, and
/// every stream, from now, resumed or filtered, gets every matching event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_fed_streams_lose_nothing_when_they_fall_behind() {
    let Some(server) = Server::start_fed(config(10, Duration::from_secs(15)), 2).await else {
        return;
    };
    let store = &*server.store;
    let early = insert(store, "sse-early", 3).await;
    let old = logged(store, 3).await;
    // A tiny receive buffer: the server's writes stop, so the stream falls behind the hub.
    let mut from_now = RawStream::new(unread_stream(&server, "?queue=sse-flood").await);
    let mut resumed = Stream::open(&server, "", Some(&old[0].id.to_string())).await;
    let mut one_job = Stream::open(&server, &format!("?after=0&job_id={}", early[2]), None).await;
    assert_eq!(one_job.event(WAIT).await.json()["job_id"], json!(early[2].to_string()));

    // Nobody reads while 20,000 events pass: far more than the hub keeps.
    let all = flood(store).await;
    let flooded: Vec<String> = all
        .iter()
        .filter(|e| e.queue == "sse-flood")
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(flooded.len(), FLOOD);
    let got = from_now.ids(FLOOD).await;
    assert_eq!(got, flooded, "every event of the queue once, in log order");

    let everything: Vec<String> = all[1..].iter().map(|e| e.id.to_string()).collect();
    let got: Vec<String> = resumed
        .events(everything.len())
        .await
        .into_iter()
        .map(|f| f.id.expect("an id"))
        .collect();
    assert_eq!(got, everything, "a resumed stream catches up and goes on");

    // Caught up, the streams go on with what happens next.
    let later = insert(store, "sse-flood", 1).await;
    let later_id = logged(store, FLOOD + 4)
        .await
        .last()
        .map(|e| e.id.to_string())
        .expect("the later event");
    assert_eq!(from_now.ids(1).await, [later_id]);
    assert_eq!(resumed.event(WAIT).await.json()["job_id"], json!(later[0].to_string()));
    store
        .job_cancel(early[2], Utc::now())
        .await
        .expect("cancel");
    let cancelled = one_job.event(WAIT).await;
    assert_eq!(cancelled.event.as_deref(), Some("cancelled"), "{cancelled:?}");
    assert_eq!(cancelled.json()["job_id"], json!(early[2].to_string()));
}

/// An event stream read off a raw socket: HTTP/1.1 chunks taken apart by hand.
struct RawStream {
    socket: tokio::net::TcpStream,
    /// Received and not yet taken apart.
    raw: Vec<u8>,
    head_done: bool,
    /// The body's text not yet split into frames.
    body: String,
    ids: std::collections::VecDeque<String>,
}

impl RawStream {
    fn new(socket: tokio::net::TcpStream) -> Self {
        Self {
            socket,
            raw: Vec::new(),
            head_done: false,
            body: String::new(),
            ids: Default::default(),
        }
    }

    /// The ids of the next `n` events (frames with `event:`).
    async fn ids(&mut self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        while self.ids.len() < n {
            let mut buf = [0u8; 65536];
            let read = tokio::time::timeout_at(deadline, self.socket.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{} of {n} events within {WAIT:?}", self.ids.len()))
                .expect("reading the socket");
            assert!(read > 0, "the stream ended");
            self.raw.extend_from_slice(&buf[..read]);
            self.take_apart();
        }
        self.ids.drain(..n).collect()
    }

    /// Moves complete chunks from `raw` to `body`, and complete frames' ids to `ids`.
    fn take_apart(&mut self) {
        if !self.head_done {
            let Some(head) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            self.raw.drain(..head + 4);
            self.head_done = true;
        }
        while let Some(eol) = self.raw.windows(2).position(|w| w == b"\r\n") {
            let size_line = std::str::from_utf8(&self.raw[..eol]).expect("chunk size");
            let size = usize::from_str_radix(size_line.trim(), 16).expect("hex chunk size");
            if self.raw.len() < eol + 2 + size + 2 {
                break;
            }
            let chunk: Vec<u8> = self.raw.drain(..eol + 2 + size + 2).collect();
            self.body
                .push_str(std::str::from_utf8(&chunk[eol + 2..eol + 2 + size]).expect("UTF-8"));
        }
        while let Some(end) = self.body.find("\n\n") {
            let frame: String = self.body.drain(..end + 2).collect();
            let mut id = None;
            let mut event = false;
            for line in frame.lines() {
                if let Some(value) = line.strip_prefix("id: ") {
                    id = Some(value.to_string());
                }
                event |= line.starts_with("event: ");
            }
            if event {
                self.ids.push_back(id.expect("an event has an id"));
            }
        }
    }
}

/// `every=`: one `summary` per interval stands for the events since the last one: their
/// count, kinds, queues and (up to 100) jobs, its id the last event's; the first comes as
/// soon as an event does. Both with and without the server's follower.
async fn summaries(mut server: Server) {
    let store = &*server.store;
    let mut stream = Stream::open(&server, "?every=1s&queue=sse-sum", None).await;
    let first = insert(store, "sse-sum", 1).await;
    let opened = Instant::now();
    let summary = stream.event(WAIT).await;
    assert_eq!(summary.event.as_deref(), Some("summary"), "{summary:?}");
    let data = summary.json();
    assert_eq!(data["events"], 1, "{data}");
    assert_eq!(data["kinds"], json!({"created": 1}));
    assert_eq!(data["queues"], json!(["sse-sum"]));
    assert_eq!(data["job_ids"], json!([first[0].to_string()]));
    assert_eq!(data["more_jobs"], false);
    assert_eq!(summary.id, Some(data["last_id"].to_string()));
    assert_eq!(data["first_id"], data["last_id"]);
    assert!(opened.elapsed() < Duration::from_secs(5), "{:?}", opened.elapsed());

    // 1,000 events in ten commits, and others of another queue: a few summaries in all.
    for _ in 0..10 {
        insert(store, "sse-sum", 100).await;
        insert(store, "sse-other", 10).await;
    }
    let logged_ids: Vec<i64> = logged(store, 1101)
        .await
        .into_iter()
        .filter(|e| e.queue == "sse-sum")
        .map(|e| e.id)
        .skip(1)
        .collect();
    assert_eq!(logged_ids.len(), 1000);
    let mut seen = 0;
    let mut frames = 0;
    let mut last = data["last_id"].as_i64().expect("last_id");
    while seen < 1000 {
        let summary = stream.event(WAIT).await;
        frames += 1;
        let data = summary.json();
        let events = data["events"].as_u64().expect("events");
        assert_eq!(data["kinds"], json!({"created": events}), "{data}");
        assert_eq!(data["queues"], json!(["sse-sum"]));
        let jobs = data["job_ids"].as_array().expect("job_ids").len() as u64;
        assert_eq!(jobs, events.min(100), "{data}");
        assert_eq!(data["more_jobs"], json!(events > 100));
        let first_id = data["first_id"].as_i64().expect("first_id");
        assert!(first_id > last, "{data} after {last}");
        last = data["last_id"].as_i64().expect("last_id");
        seen += events;
    }
    assert_eq!(seen, 1000);
    assert_eq!(Some(&last), logged_ids.last());
    assert!(frames < 10, "{frames} summaries for 1,000 events");

    // What is not a duration is refused naming `every`; JSON pages ignore it.
    for every in ["x", "-1s", "1s2", "5parsecs", "99999999999999999999d", "1s%00"] {
        let bad = request(&server, &format!("?every={every}"), None).await;
        assert_eq!(bad.status(), 400, "every={every}");
        let body: Value = bad.json().await.expect("an error body");
        assert!(
            body["error"]["message"].as_str().unwrap_or("").starts_with("every"),
            "{body}"
        );
    }
    let json_page = client()
        .get(server.url("/api/v1/events?every=1s&limit=1"))
        .send()
        .await
        .expect("JSON events");
    assert_eq!(json_page.status(), 200);
    // Far outside 100ms..1h: cut to it, so a stream still opens.
    for every in ["1ms", "1000h"] {
        let cut = request(&server, &format!("?every={every}"), None).await;
        assert_eq!(cut.status(), 200, "every={every}");
    }

    // A summary waiting for its hour does not keep a stopping server.
    let mut hourly = Stream::open(&server, "?every=1h&queue=sse-hourly", None).await;
    insert(store, "sse-hourly", 1).await;
    assert_eq!(hourly.event(WAIT).await.json()["events"], 1);
    insert(store, "sse-hourly", 1).await;
    logged(store, 1103).await;
    let took = server.stop().await;
    assert!(took < Duration::from_secs(6), "the server took {took:?} to stop");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while hourly.frame(WAIT).await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the hourly stream ended with the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_summaries_from_the_servers_follower() {
    if let Some(server) = Server::start_fed(config(10, Duration::from_secs(15)), 64).await {
        summaries(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_summaries_read_from_the_store() {
    if let Some(server) =
        Server::start(config(10, Duration::from_secs(15)), ConnLimits::default()).await
    {
        summaries(server).await;
    }
}
