//! Store events over LISTEN/NOTIFY.
//!
//! Writers publish the events of a change with `pg_notify` inside the transaction that makes
//! the change, so they are delivered only if it commits, and to every process listening on
//! the database. Each process keeps one dedicated connection that `LISTEN`s on the channel and
//! forwards what arrives to its local broadcast channel, reconnecting with backoff when the
//! connection drops. Events are hints: consumers also poll.
//!
//! Wire format: a notification's payload is a JSON array of events, packed so that a payload
//! stays below PostgreSQL's 8000-byte limit: `{"a": queue}` (jobs available),
//! `{"f": id, "s": state}` (job finished), `{"c": id}` (cancel requested), `{"l": 1}` (new
//! event log entries). Unknown entries are skipped, so newer writers may add kinds.
//!
//! `{"l": 1}` is the one event not sent inside the writing transaction: a store sends it
//! after the commit, at most every [`LOGGED_EVERY`] (`announce_logged`); transactional
//! enqueue ([`crate::enqueue_in`]), whose commit the application makes, sends it in its
//! transaction like the others.

use crate::connect::quote_ident;
use hinter_core::{JobState, StoreError, StoreEvent};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::future::poll_fn;
use std::time::Duration;
use tokio::sync::{broadcast, oneshot, watch};
use tokio_postgres::AsyncMessage;
use uuid::Uuid;

/// Largest payload sent in one notification (PostgreSQL refuses 8000 bytes and more).
const MAX_PAYLOAD: usize = 7900;
/// First pause before reconnecting the listener; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often an idle listener checks that its connection still answers.
const LISTEN_PING_EVERY: Duration = Duration::from_secs(15);

/// Least time between two announcements of new event log entries by one store: a busy
/// process commits thousands of logged changes a second, and each NOTIFY costs every
/// listener a wake-up, so one says "look again" for all the changes of the window.
pub const LOGGED_EVERY: Duration = Duration::from_millis(5);
/// How long the announcer waits for a writing transaction to carry the hint instead.
const ANNOUNCE_GRACE: Duration = Duration::from_millis(10);

/// Announces new event log entries (`{"l": 1}`) to every process on the database, after the
/// commits that wrote them: one NOTIFY per poke on `pokes`, paced by [`pace`]. Sent on a
/// pooled connection outside any writing transaction, so writers never wait for it; best
/// effort (readers also poll): a failure is logged and the next poke tries again. Ends when
/// the store (the sender) is dropped.
pub(crate) async fn announce_logged(
    pool: deadpool_postgres::Pool,
    channel: String,
    origin: String,
    pokes: tokio::sync::mpsc::Receiver<()>,
    announced: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::sync::atomic::Ordering;
    // This store's own readers were woken at each commit already.
    let payload = encode(&[StoreEvent::Logged], Some(&origin)).concat();
    pace(pokes, LOGGED_EVERY, || async {
        // A busy store's next notifying transaction usually carries the hint within this
        // grace; then a NOTIFY of its own (a commit that queues for the global notification
        // lock) is not needed.
        let before = announced.load(Ordering::Acquire);
        tokio::time::sleep(ANNOUNCE_GRACE).await;
        if announced.load(Ordering::Acquire) != before {
            return;
        }
        let sent = async {
            let client = pool.get().await.map_err(|e| e.to_string())?;
            let stmt = client
                .prepare_cached("SELECT pg_notify($1, $2)")
                .await
                .map_err(|e| crate::ops::describe(&e))?;
            client
                .execute(&stmt, &[&channel, &payload])
                .await
                .map_err(|e| crate::ops::describe(&e))
        }
        .await;
        match sent {
            Ok(_) => {
                announced.fetch_add(1, Ordering::Release);
            }
            Err(error) => {
                tracing::debug!(%error, channel, "announcing new event log entries failed")
            }
        }
    })
    .await;
}

/// Calls `send` once per poke, starting at most one call per `every`: a poke while a call
/// runs or the pause after it lasts waits in the channel (which holds one: pokes meanwhile
/// are one) and is served when the pause ends, so the last poke is always followed by a
/// call that starts after it (trailing edge). Ends when every sender is dropped.
pub(crate) async fn pace<F, Fut>(
    mut pokes: tokio::sync::mpsc::Receiver<()>,
    every: Duration,
    mut send: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while pokes.recv().await.is_some() {
        let window = tokio::time::Instant::now() + every;
        send().await;
        tokio::time::sleep_until(window).await;
    }
}

/// The notification channel of a store in `schema` (`hinter_events` without one).
pub fn channel(schema: Option<&str>) -> String {
    match schema {
        None => "hinter_events".to_string(),
        Some(schema) => format!("hinter_events:{schema}"),
    }
}

fn encode_one(event: &StoreEvent) -> Value {
    match event {
        StoreEvent::JobsAvailable { queue } => json!({ "a": queue }),
        StoreEvent::JobFinished { id, state } => json!({ "f": id, "s": state.as_str() }),
        StoreEvent::CancelRequested { id } => json!({ "c": id }),
        StoreEvent::Changed => json!({ "x": 1 }),
        StoreEvent::Logged => json!({ "l": 1 }),
    }
}

/// Notification payloads for `events`, duplicates removed, each under `MAX_PAYLOAD`
/// bytes. An event too big for any payload (a huge queue name) is dropped: events are hints.
///
/// With an `origin` (the sending store's [`crate::PostgresStore`] instance), each payload
/// starts with `{"o": origin}`: that store has delivered the events to its own subscribers
/// already, right after its commit, and its listener skips them. Decoders that do not know
/// the item skip it.
pub fn encode(events: &[StoreEvent], origin: Option<&str>) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut payloads = Vec::new();
    let mut current = String::new();
    let head = origin.map(|o| json!({ "o": o }).to_string());
    let head_len = head.as_ref().map_or(0, |h| h.len() + 1);
    for event in events {
        let item = encode_one(event).to_string();
        if !seen.insert(item.clone()) {
            continue;
        }
        if head_len + item.len() + 2 > MAX_PAYLOAD {
            tracing::debug!(?event, "event too large for a notification; not published");
            continue;
        }
        if !current.is_empty() && current.len() + item.len() + 2 > MAX_PAYLOAD {
            current.push(']');
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push('[');
            if let Some(head) = &head {
                current.push_str(head);
                current.push(',');
            }
        } else {
            current.push(',');
        }
        current.push_str(&item);
    }
    if !current.is_empty() {
        current.push(']');
        payloads.push(current);
    }
    payloads
}

fn decode_one(value: &Value) -> Option<StoreEvent> {
    let obj = value.as_object()?;
    if let Some(queue) = obj.get("a").and_then(Value::as_str) {
        return Some(StoreEvent::JobsAvailable {
            queue: queue.to_string(),
        });
    }
    if let Some(id) = obj.get("f").and_then(Value::as_str) {
        let id = Uuid::parse_str(id).ok()?;
        let state = obj.get("s")?.as_str()?.parse::<JobState>().ok()?;
        return Some(StoreEvent::JobFinished { id, state });
    }
    if let Some(id) = obj.get("c").and_then(Value::as_str) {
        return Some(StoreEvent::CancelRequested {
            id: Uuid::parse_str(id).ok()?,
        });
    }
    if obj.contains_key("l") {
        return Some(StoreEvent::Logged);
    }
    if obj.contains_key("x") {
        return Some(StoreEvent::Changed);
    }
    None
}

/// The events in a notification payload; malformed parts are skipped.
pub fn decode(payload: &str) -> Vec<StoreEvent> {
    decode_from(payload).1
}

/// The sending store's origin (see [`encode`]) and the events of a notification payload.
fn decode_from(payload: &str) -> (Option<String>, Vec<StoreEvent>) {
    match serde_json::from_str::<Value>(payload) {
        Ok(Value::Array(items)) => {
            let origin = items
                .first()
                .and_then(|i| i.get("o"))
                .and_then(Value::as_str)
                .map(str::to_string);
            (origin, items.iter().filter_map(decode_one).collect())
        }
        Ok(single) => (None, decode_one(&single).into_iter().collect()),
        Err(e) => {
            tracing::debug!(error = %e, "ignoring a malformed hinter notification");
            (None, Vec::new())
        }
    }
}

/// Runs the listener until `stop` fires (its sender is dropped): LISTENs on `channel` and
/// forwards events to `events`, reconnecting with backoff. `ready` is answered once, after
/// the first LISTEN succeeded or failed.
pub(crate) async fn listen(
    settings: crate::connect::Settings,
    target: String,
    channel: String,
    origin: String,
    events: broadcast::Sender<StoreEvent>,
    mut stop: watch::Receiver<()>,
    ready: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    loop {
        let mut listening = false;
        let session = session(
            &settings,
            (&channel, &origin),
            &events,
            &mut listening,
            &mut ready,
        );
        let outcome = tokio::select! {
            _ = stop.changed() => return,
            outcome = session => outcome,
        };
        if let Some(ready) = ready.take() {
            let message = match &outcome {
                Err(e) => format!("cannot listen for events on {target}: {e}"),
                Ok(()) => format!("the event connection to {target} closed at once"),
            };
            let _ = ready.send(Err(StoreError::Unavailable(message)));
            return;
        }
        if listening {
            backoff = MIN_BACKOFF;
        }
        match outcome {
            Ok(()) => tracing::warn!(target = %target, "event connection closed; reconnecting"),
            Err(e) => tracing::warn!(
                target = %target,
                error = %e,
                retry_in_ms = backoff.as_millis() as u64,
                "event connection failed; reconnecting"
            ),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening connection, until it closes or fails.
async fn session(
    settings: &crate::connect::Settings,
    (channel, origin): (&str, &str),
    events: &broadcast::Sender<StoreEvent>,
    listening: &mut bool,
    ready: &mut Option<oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = settings.config.connect(settings.connector.clone()).await?;
    let listen_sql = format!("LISTEN {}", quote_ident(channel));
    let mut listen = std::pin::pin!(client.batch_execute(&listen_sql));
    let mut ping = tokio::time::interval(LISTEN_PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            done = &mut listen, if !*listening => {
                done?;
                *listening = true;
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Ok(()));
                    }
                    // Events published while it was away are lost: consumers poll.
                    None => tracing::info!(channel, "listening for events again"),
                }
            }
            _ = ping.tick(), if *listening => {
                // Drive the connection while the check runs, or it would never answer.
                let check = client.simple_query("");
                let mut check = std::pin::pin!(tokio::time::timeout(LISTEN_PING_EVERY, check));
                loop {
                    tokio::select! {
                        answer = &mut check => match answer {
                            Ok(Ok(_)) => break,
                            Ok(Err(e)) => return Err(e),
                            Err(_) => return Ok(()),
                        },
                        message = poll_fn(|cx| connection.poll_message(cx)) => {
                            if !forward(message, origin, events)? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            message = poll_fn(|cx| connection.poll_message(cx)) => {
                if !forward(message, origin, events)? {
                    return Ok(());
                }
            }
        }
    }
}

/// Handles one message of the listening connection; false when the connection closed.
/// Skips the notifications of this store itself (`origin`): it delivered those events at
/// its commit.
fn forward(
    message: Option<Result<AsyncMessage, tokio_postgres::Error>>,
    origin: &str,
    events: &broadcast::Sender<StoreEvent>,
) -> Result<bool, tokio_postgres::Error> {
    match message {
        None => Ok(false),
        Some(Err(e)) => Err(e),
        Some(Ok(AsyncMessage::Notification(n))) => {
            let (from, decoded) = decode_from(n.payload());
            if from.as_deref() == Some(origin) {
                return Ok(true);
            }
            for event in decoded {
                // No receivers is fine: nobody is waiting right now.
                let _ = events.send(event);
            }
            Ok(true)
        }
        Some(Ok(_)) => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many pokes, few calls: calls start at least `every` apart, and the last poke is
    /// followed by a call that starts after it.
    #[tokio::test]
    async fn pace_spaces_calls_and_never_drops_the_last_poke() {
        use std::sync::{Arc, Mutex};
        use tokio::time::Instant;
        let every = Duration::from_millis(5);
        let calls: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let record = calls.clone();
        let pacer = tokio::spawn(pace(rx, every, move || {
            let record = record.clone();
            async move {
                record.lock().expect("lock").push(Instant::now());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
        let started = Instant::now();
        let mut last_poke = started;
        let mut pokes = 0;
        while started.elapsed() < Duration::from_millis(60) {
            let _ = tx.try_send(());
            last_poke = Instant::now();
            pokes += 1;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        drop(tx);
        pacer.await.expect("the pacer ends with its senders");
        let calls = calls.lock().expect("lock").clone();
        assert!(
            calls.len() >= 2 && calls.len() < pokes,
            "{} calls",
            calls.len()
        );
        for pair in calls.windows(2) {
            assert!(pair[1] - pair[0] >= every, "calls closer than {every:?}");
        }
        assert!(
            *calls.last().expect("calls") >= last_poke,
            "the last poke was not served"
        );
        // 60 ms of pokes: about 12 calls, never one per poke.
        assert!(calls.len() <= 14, "{} calls in 60 ms", calls.len());
    }

    #[test]
    fn events_round_trip_and_pack() {
        let id = Uuid::now_v7();
        let events = vec![
            StoreEvent::JobsAvailable { queue: "q".into() },
            StoreEvent::JobFinished {
                id,
                state: JobState::Dead,
            },
            StoreEvent::CancelRequested { id },
            StoreEvent::JobsAvailable { queue: "q".into() },
        ];
        let payloads = encode(&events, None);
        assert_eq!(payloads.len(), 1);
        assert_eq!(decode(&payloads[0]), events[..3].to_vec());

        let many: Vec<StoreEvent> = (0..1000)
            .map(|i| StoreEvent::JobsAvailable {
                queue: format!("queue-{i}"),
            })
            .collect();
        let payloads = encode(&many, None);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let back: Vec<StoreEvent> = payloads.iter().flat_map(|p| decode(p)).collect();
        assert_eq!(back, many);

        let huge = StoreEvent::JobsAvailable {
            queue: "x".repeat(9000),
        };
        assert!(encode(&[huge], None).is_empty());
        assert!(decode("not json").is_empty());
        assert!(decode(r#"[{"zz": 1}, {"a": "q"}]"#).len() == 1);
    }

    /// Every payload of a store's own notification names it first, still fits, and decodes
    /// to the same events (an older decoder skips the origin item as unknown).
    #[test]
    fn origins_head_every_payload() {
        let many: Vec<StoreEvent> = (0..1000)
            .map(|i| StoreEvent::JobsAvailable {
                queue: format!("queue-{i}"),
            })
            .collect();
        let payloads = encode(&many, Some("0123456789abcdef"));
        assert!(payloads.len() > 1);
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD);
            assert!(
                payload.starts_with(r#"[{"o":"0123456789abcdef"},"#),
                "{payload}"
            );
            assert_eq!(decode_from(payload).0.as_deref(), Some("0123456789abcdef"));
        }
        let back: Vec<StoreEvent> = payloads.iter().flat_map(|p| decode(p)).collect();
        assert_eq!(back, many);
        assert_eq!(decode_from(&encode(&many[..1], None)[0]).0, None);
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel(None), "hinter_events");
        assert_eq!(channel(Some("t1")), "hinter_events:t1");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
