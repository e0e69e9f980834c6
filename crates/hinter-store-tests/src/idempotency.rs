//! Idempotency keys of enqueues (`WriteOp::InsertOnce`): the first use of a key inserts and
//! keeps the answer, in the insert's transaction; the same request again gets that answer and
//! inserts nothing; another request with the key is told so; expired keys count as unused
//! and are pruned.

use crate::support::*;
use chrono::{DateTime, Utc};
use hinter_core::store::{Idempotent, IdempotentInsert, JobFilter, WriteOp, WriteResult};
use hinter_core::{Inserted, NewJob, Store, StoreError};
use std::sync::Arc;
use uuid::Uuid;

const SCOPE: &str = "scope-a";
const FINGERPRINT: &str = "fingerprint-1";

fn once(key: &str, fingerprint: &str, expires_at: DateTime<Utc>, jobs: Vec<NewJob>) -> WriteOp {
    WriteOp::InsertOnce(IdempotentInsert {
        scope: SCOPE.into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
        expires_at,
        jobs,
    })
}

async fn insert_once(store: &dyn Store, op: WriteOp, now: DateTime<Utc>) -> Idempotent {
    match store.write_unit(vec![op], now).await {
        Ok(mut results) if results.len() == 1 => match results.pop() {
            Some(WriteResult::InsertedOnce(answer)) => answer,
            other => panic!("expected an InsertedOnce answer, got {other:?}"),
        },
        other => panic!("write_unit(InsertOnce): {other:?}"),
    }
}

/// The answer without `seq`, which a kept answer does not hold.
fn answered(mut inserted: Vec<Inserted>) -> Vec<Inserted> {
    for i in &mut inserted {
        i.job.seq = 0;
    }
    inserted
}

async fn job_count(store: &dyn Store) -> usize {
    list(
        store,
        JobFilter {
            limit: 1000,
            ..JobFilter::default()
        },
    )
    .await
    .len()
}

/// The first use inserts; the same request with the key again answers the first answer (the
/// jobs as they were then) and inserts nothing, also after the job changed; another scope's
/// key of the same name is another key.
pub async fn idempotency_same_key_inserts_once_and_replays(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let expires = now + secs(3600);
    let first = job_in("mail", "idem");
    let Idempotent::Inserted(answer) = insert_once(
        store,
        once("k1", FINGERPRINT, expires, vec![first.clone()]),
        now,
    )
    .await
    else {
        panic!("the first use of a key inserts");
    };
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0].job, stored(store, first.id).await);
    assert!(!answer[0].duplicate);

    let leased = lease_job(store, "idem", first.id, now + secs(1)).await;
    let retry = job_in("mail", "idem");
    let replayed = insert_once(
        store,
        once("k1", FINGERPRINT, expires + secs(10), vec![retry.clone()]),
        now + secs(2),
    )
    .await;
    assert_eq!(
        replayed,
        Idempotent::Replayed(answered(answer.clone())),
        "the kept answer, with the job as it was when first answered"
    );
    assert_eq!(store.job_get(retry.id).await.expect("job_get"), None);
    assert_eq!(job_count(store).await, 1, "nothing inserted by the replay");
    complete_ok(store, &leased, now + secs(3)).await;

    let other_scope = job_in("mail", "idem");
    let answer = store
        .write_unit(
            vec![WriteOp::InsertOnce(IdempotentInsert {
                scope: "scope-b".into(),
                key: "k1".into(),
                fingerprint: FINGERPRINT.into(),
                expires_at: expires,
                jobs: vec![other_scope.clone()],
            })],
            now + secs(4),
        )
        .await
        .expect("write_unit");
    assert!(
        matches!(
            &answer[..],
            [WriteResult::InsertedOnce(Idempotent::Inserted(_))]
        ),
        "keys are per scope: {answer:?}"
    );
    assert_eq!(job_count(store).await, 2);
}

/// A batch keeps its whole answer, duplicates (`unique_key`) included, in order.
pub async fn idempotency_batch_answer_is_kept_whole(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let expires = now + secs(3600);
    let existing = insert(store, job("report").unique("day-1", None), now).await;
    let batch = vec![
        job("report").unique("day-1", None),
        job("mail"),
        job("mail"),
    ];
    let Idempotent::Inserted(answer) =
        insert_once(store, once("batch", FINGERPRINT, expires, batch), now).await
    else {
        panic!("the first use of a key inserts");
    };
    assert_eq!(
        answer.iter().map(|i| i.duplicate).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(answer[0].job.id, existing.id);
    let again = vec![job("report"), job("mail"), job("mail")];
    assert_eq!(
        insert_once(
            store,
            once("batch", FINGERPRINT, expires, again),
            now + secs(1)
        )
        .await,
        Idempotent::Replayed(answered(answer))
    );
    assert_eq!(job_count(store).await, 3);
}

/// The key used for another request (another fingerprint) is refused as such, and nothing is
/// inserted; the first answer stays kept.
pub async fn idempotency_other_request_with_the_key_is_refused(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let expires = now + secs(3600);
    let first = job("mail");
    let Idempotent::Inserted(answer) =
        insert_once(store, once("k", FINGERPRINT, expires, vec![first]), now).await
    else {
        panic!("the first use of a key inserts");
    };
    let other = job("sms");
    assert_eq!(
        insert_once(
            store,
            once("k", "fingerprint-2", expires, vec![other.clone()]),
            now
        )
        .await,
        Idempotent::KeyReused
    );
    assert_eq!(store.job_get(other.id).await.expect("job_get"), None);
    assert_eq!(
        insert_once(
            store,
            once("k", FINGERPRINT, expires, vec![job("mail")]),
            now
        )
        .await,
        Idempotent::Replayed(answered(answer))
    );
    assert_eq!(job_count(store).await, 1);
}

/// A key answers until its `expires_at` (exclusive); then it is unused again, for any
/// request, and the new use is kept. Pruning deletes expired keys only, earliest first, at
/// most `limit`.
pub async fn idempotency_keys_expire_and_are_pruned(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let first = job("mail");
    insert_once(
        store,
        once("k", FINGERPRINT, now + secs(10), vec![first.clone()]),
        now,
    )
    .await;
    assert!(matches!(
        insert_once(
            store,
            once("k", FINGERPRINT, now + secs(20), vec![job("mail")]),
            now + secs(10) - chrono::Duration::milliseconds(1)
        )
        .await,
        Idempotent::Replayed(_)
    ));
    let second = job("sms");
    let Idempotent::Inserted(answer) = insert_once(
        store,
        once("k", "fingerprint-2", now + secs(40), vec![second.clone()]),
        now + secs(10),
    )
    .await
    else {
        panic!("an expired key is unused again");
    };
    assert_eq!(answer[0].job.id, second.id);
    assert!(matches!(
        insert_once(
            store,
            once("k", "fingerprint-2", now + secs(50), vec![job("sms")]),
            now + secs(11)
        )
        .await,
        Idempotent::Replayed(a) if a[0].job.id == second.id
    ));
    assert_eq!(job_count(store).await, 2);

    // Keys expiring at +20 and +30 (and "k" at +40).
    for (key, at) in [("p1", 20), ("p2", 30)] {
        insert_once(
            store,
            once(key, FINGERPRINT, now + secs(at), vec![job("mail")]),
            now + secs(12),
        )
        .await;
    }
    assert_eq!(store.idempotency_prune(now + secs(19), 10).await, Ok(0));
    assert_eq!(
        store.idempotency_prune(now + secs(30), 1).await,
        Ok(1),
        "at most limit"
    );
    assert_eq!(store.idempotency_prune(now + secs(30), 10).await, Ok(1));
    assert_eq!(store.idempotency_prune(now + secs(30), 10).await, Ok(0));
    assert!(
        matches!(
            insert_once(
                store,
                once("k", "fingerprint-2", now + secs(50), vec![job("sms")]),
                now + secs(30)
            )
            .await,
            Idempotent::Replayed(_)
        ),
        "a live key is not pruned"
    );
    assert_eq!(store.idempotency_prune(now + secs(40), 10).await, Ok(1));
}

/// The key is kept only with its insert: a unit that fails after it, or an insert the store
/// refuses, leaves no key (and no job), so the request can be made again.
pub async fn idempotency_key_is_atomic_with_the_insert(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let expires = now + secs(3600);
    let unknown = Uuid::now_v7();
    let first = job("mail");
    let failed = store
        .write_unit(
            vec![
                once("k", FINGERPRINT, expires, vec![first.clone()]),
                WriteOp::Cancel(unknown),
            ],
            now,
        )
        .await;
    assert_eq!(failed, Err(StoreError::NotFound(unknown)));
    assert_eq!(store.job_get(first.id).await.expect("job_get"), None);

    let refused = store
        .write_unit(
            vec![once("k", FINGERPRINT, expires, vec![job("bad\0name")])],
            now,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let bad_key = store
        .write_unit(
            vec![once("k\0", FINGERPRINT, expires, vec![job("mail")])],
            now,
        )
        .await;
    assert!(
        matches!(bad_key, Err(StoreError::Invalid(_))),
        "{bad_key:?}"
    );
    assert_eq!(job_count(store).await, 0);

    let again = job("mail");
    let answer = insert_once(
        store,
        once("k", FINGERPRINT, expires, vec![again.clone()]),
        now,
    )
    .await;
    assert!(
        matches!(&answer, Idempotent::Inserted(a) if a[0].job.id == again.id),
        "no key was left by the failed units: {answer:?}"
    );
    assert_eq!(job_count(store).await, 1);
}

/// Many uses of one key at once insert one job; every other use answers that job.
pub async fn idempotency_concurrent_uses_insert_once(store: Arc<dyn Store>) {
    let now = base_time();
    let expires = now + secs(3600);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            insert_once(
                &*store,
                once("k", FINGERPRINT, expires, vec![job("mail")]),
                now,
            )
            .await
        });
    }
    let mut inserted = Vec::new();
    let mut replayed = Vec::new();
    while let Some(answer) = tasks.join_next().await {
        match answer.expect("task") {
            Idempotent::Inserted(a) => inserted.push(a[0].job.id),
            Idempotent::Replayed(a) => replayed.push(a[0].job.id),
            Idempotent::KeyReused => panic!("the same request is not another one"),
        }
    }
    assert_eq!(inserted.len(), 1, "one use inserts: {inserted:?}");
    assert_eq!(replayed.len(), 7);
    assert!(replayed.iter().all(|id| *id == inserted[0]));
    assert_eq!(job_count(&*store).await, 1);
}
