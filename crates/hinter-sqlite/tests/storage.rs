//! The SQLite store's storage guards: the WAL stays bounded under sustained writes and is
//! empty after a clean close or a reopen; a full disk makes writes fail with "disk full"
//! and the store unready until a write succeeds; a database file deleted while open makes
//! every later write fail.

use chrono::Utc;
use hinter_core::store::JobFilter;
use hinter_core::{NewJob, Store, StoreError};
use hinter_sqlite::{Durability, SqliteOptions, SqliteStore};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn wal_of(db: &Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn wal_size(db: &Path) -> u64 {
    std::fs::metadata(wal_of(db)).map(|m| m.len()).unwrap_or(0)
}

fn options(wal_limit: u64) -> SqliteOptions {
    SqliteOptions {
        // The WAL grows the same either way; no fsync keeps the test quick.
        durability: Durability::Relaxed,
        wal_limit,
        ..SqliteOptions::default()
    }
}

/// A job carrying about `bytes` of payload.
fn job_of(bytes: usize) -> NewJob {
    NewJob::new("storage", json!({ "blob": "x".repeat(bytes) }))
}

const WAL_LIMIT: u64 = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_under_sustained_writes_and_is_empty_after_close_and_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("hinter.db");
    let store = Arc::new(
        SqliteStore::open(&db, options(WAL_LIMIT))
            .await
            .expect("open"),
    );
    // Writers never pause; readers keep read transactions coming, as a server's would.
    let target = 40 * WAL_LIMIT;
    let written = Arc::new(AtomicU64::new(0));
    let largest = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (store, written, largest, db) =
            (store.clone(), written.clone(), largest.clone(), db.clone());
        tasks.spawn(async move {
            while written.load(Ordering::Relaxed) < target {
                let jobs: Vec<NewJob> = (0..10).map(|_| job_of(1000)).collect();
                store
                    .job_insert_many(jobs, Utc::now())
                    .await
                    .expect("insert");
                written.fetch_add(10 * 1000, Ordering::Relaxed);
                largest.fetch_max(wal_size(&db), Ordering::Relaxed);
            }
        });
    }
    for _ in 0..2 {
        let (store, written) = (store.clone(), written.clone());
        tasks.spawn(async move {
            while written.load(Ordering::Relaxed) < target {
                let filter = JobFilter {
                    limit: 20,
                    ..JobFilter::default()
                };
                store.job_list(filter).await.expect("list");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a task of the test");
    }
    let largest = largest.load(Ordering::Relaxed);
    assert!(
        largest < 4 * WAL_LIMIT,
        "the WAL reached {largest} bytes with a bound of {WAL_LIMIT} ({} bytes of payload written)",
        written.load(Ordering::Relaxed)
    );
    let details = store.details();
    assert_eq!(details["wal_limit_bytes"], json!(WAL_LIMIT));
    assert!(details["wal_bytes"].is_u64(), "{details:?}");

    store.close().await.expect("close");
    assert_eq!(wal_size(&db), 0, "the WAL after a clean close");
    let late = store.job_insert_many(vec![job_of(10)], Utc::now()).await;
    assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
    drop(store);

    let store = SqliteStore::open(&db, options(WAL_LIMIT))
        .await
        .expect("reopen");
    assert!(
        wal_size(&db) < WAL_LIMIT / 4,
        "the WAL after reopening is {} bytes",
        wal_size(&db)
    );
    let all = store
        .job_list(JobFilter {
            limit: 1,
            ..JobFilter::default()
        })
        .await
        .expect("list after reopen");
    assert_eq!(all.len(), 1, "the jobs are still there");
}

#[tokio::test]
async fn opening_truncates_a_wal_left_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("hinter.db");
    drop(
        SqliteStore::open(&db, options(WAL_LIMIT))
            .await
            .expect("create"),
    );
    {
        // Another program (or a process killed before it could tidy up) leaves a large WAL.
        let conn = rusqlite::Connection::open(&db).expect("open raw");
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE filler (b BLOB);")
            .expect("set up filler");
        for _ in 0..64 {
            conn.execute("INSERT INTO filler VALUES (zeroblob(32768))", [])
                .expect("fill");
        }
        // Not closed: a close would checkpoint and delete the WAL.
        std::mem::forget(conn);
    }
    assert!(wal_size(&db) > 2 * 1024 * 1024, "the WAL is large before");
    let _store = SqliteStore::open(&db, options(WAL_LIMIT))
        .await
        .expect("reopen");
    assert_eq!(wal_size(&db), 0, "the WAL after opening");
}

#[tokio::test]
async fn a_full_disk_fails_writes_with_disk_full_and_the_store_is_unready_until_a_write_succeeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("hinter.db");
    let store = SqliteStore::open(
        &db,
        SqliteOptions {
            // No room to grow beyond the schema: like a disk with no space left.
            max_size: Some(1),
            ..options(WAL_LIMIT)
        },
    )
    .await
    .expect("open");
    store.ping().await.expect("ready before");

    let big = store
        .job_insert_many(vec![job_of(200_000)], Utc::now())
        .await;
    match &big {
        Err(StoreError::Storage(m)) => assert!(m.contains("disk full"), "{m}"),
        other => panic!("a write on a full disk answered {other:?}"),
    }
    match store.ping().await {
        Err(StoreError::Storage(m)) => assert!(m.contains("disk full"), "{m}"),
        other => panic!("ping while writes fail answered {other:?}"),
    }
    // A write that needs no new page still fits; once one succeeds the store is ready.
    store
        .job_insert_many(vec![job_of(10)], Utc::now())
        .await
        .expect("a small write fits");
    store
        .ping()
        .await
        .expect("ready again after a write succeeded");
}

#[tokio::test]
async fn a_database_file_deleted_while_open_refuses_every_later_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("hinter.db");
    let store = SqliteStore::open(&db, options(WAL_LIMIT))
        .await
        .expect("open");
    store
        .job_insert_many(vec![job_of(10)], Utc::now())
        .await
        .expect("insert before");
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        std::fs::remove_file(PathBuf::from(path)).expect("remove a database file");
    }
    for _ in 0..2 {
        match store.job_insert_many(vec![job_of(10)], Utc::now()).await {
            Err(StoreError::Storage(m)) => assert!(m.contains("deleted"), "{m}"),
            other => panic!("a write after the file was deleted answered {other:?}"),
        }
    }
    match store.ping().await {
        Err(StoreError::Storage(m)) => assert!(m.contains("deleted"), "{m}"),
        other => panic!("ping after the file was deleted answered {other:?}"),
    }
    assert!(!db.exists(), "nothing recreated the database file");
}
