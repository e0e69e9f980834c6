//! Schedules across processes: three `serve` on one database fire an every-second schedule;
//! every tick is fired exactly once, and when the server that fired last is killed (SIGKILL)
//! the others fire the following ticks on time, none skipped, none doubled.

use crate::util::*;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Ticks watched before the kill, and after it.
const BEFORE_KILL: usize = 30;
const AFTER_KILL: usize = 10;

fn time_of(value: &Value, field: &str) -> DateTime<Utc> {
    str_of(value, field)
        .parse()
        .unwrap_or_else(|e| panic!("{field} of {value}: {e}"))
}

/// The schedule's history, oldest first.
async fn history(api: &Api) -> Vec<Value> {
    let resp = api
        .get("/api/v1/schedules/every-second/occurrences?limit=1000")
        .await
        .expect_status(200);
    let mut all = resp.body["occurrences"]
        .as_array()
        .expect("occurrences")
        .clone();
    all.reverse();
    all
}

/// Every occurrence fired, one per second from the first with no gap, each with its own job;
/// the number of ticks.
fn check_exactly_once(history: &[Value]) -> usize {
    let mut jobs = BTreeSet::new();
    for (i, o) in history.iter().enumerate() {
        assert_eq!(o["outcome"], "fired", "occurrence {i}: {o}");
        assert!(
            jobs.insert(str_of(o, "job_id").to_string()),
            "job fired twice: {o}"
        );
        if i > 0 {
            let step = time_of(o, "fire_time") - time_of(&history[i - 1], "fire_time");
            assert_eq!(
                step,
                chrono::Duration::seconds(1),
                "ticks {} and {i} are not one second apart (skipped or doubled): {} / {o}",
                i - 1,
                history[i - 1]
            );
        }
    }
    history.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_serves_fire_each_tick_once_and_the_next_after_the_firer_is_killed() {
    let Some(db) = TestDb::new("three_serves_fire_each_tick_once") else {
        return;
    };
    let dir = TestDir::new("schedules");
    let mut serves = Vec::new();
    for name in ["serve-a", "serve-b", "serve-c"] {
        serves.push(start_serve(&dir, &db, name, &[]).await);
    }
    // Nobody runs `tick` jobs: `allow` so each tick fires although the last job waits.
    serves[0]
        .api
        .post(
            "/api/v1/schedules",
            &json!({"name": "every-second", "cron": "* * * * * *", "job": "tick",
                    "overlap": "allow"}),
        )
        .await
        .expect_status(201);
    let observer = serves[1].api.clone();
    let before = wait_for(
        Duration::from_secs(BEFORE_KILL as u64 + 30),
        "30 ticks",
        || async {
            let h = history(&observer).await;
            (h.len() >= BEFORE_KILL).then_some(h)
        },
    )
    .await;
    check_exactly_once(&before);
    let by: BTreeMap<String, usize> = before.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(str_of(o, "fired_by").to_string()).or_default() += 1;
        m
    });
    eprintln!("ticks fired per server: {by:?}");

    // Kill the server that fired the latest tick.
    let latest = history(&observer).await;
    let last = latest.last().expect("a tick");
    let firer = str_of(last, "fired_by").to_string();
    let workers = observer.workers().await;
    let pid = workers
        .iter()
        .find(|w| w["id"] == firer.as_str())
        .and_then(|w| w["pid"].as_u64())
        .unwrap_or_else(|| panic!("the firer {firer} is not listed: {workers:?}"));
    let victim = serves
        .iter()
        .position(|s| u64::from(s.proc.pid()) == pid)
        .expect("the firer is one of the serves");
    let mut killed = serves.remove(victim);
    killed.kill();
    let killed_at = Utc::now();
    let survivor = serves[0].api.clone();

    let after = wait_for(
        Duration::from_secs(AFTER_KILL as u64 + 30),
        "ticks after the kill",
        || async {
            let h = history(&survivor).await;
            let later = h
                .iter()
                .filter(|o| time_of(o, "fire_time") > killed_at)
                .count();
            (later >= AFTER_KILL).then_some(h)
        },
    )
    .await;
    let ticks = check_exactly_once(&after);
    assert!(ticks >= BEFORE_KILL + AFTER_KILL);
    // On time: the ticks after the kill were fired by survivors, within a second of their time
    // (the survivors never needed a leadership to fail over).
    for o in after
        .iter()
        .filter(|o| time_of(o, "fire_time") > killed_at + chrono::Duration::seconds(1))
    {
        assert_ne!(str_of(o, "fired_by"), firer, "{o}");
        let late = time_of(o, "recorded_at") - time_of(o, "fire_time");
        assert!(
            late < chrono::Duration::seconds(1),
            "fired {late} late after the kill: {o}"
        );
    }
    // One job per tick in the store.
    let queued = survivor.queue_counts("default").await["queued"]
        .as_u64()
        .unwrap_or(0);
    assert!(queued as usize >= ticks, "{queued} jobs for {ticks} ticks");
}
