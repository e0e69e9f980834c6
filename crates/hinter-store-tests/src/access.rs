//! API tokens and the audit record of admin actions.

use crate::support::*;
use hinter_core::access::{
    hash_secret, AuditEntry, NewAudit, NewToken, Scope, TokenInfo, ACTOR_CLI,
};
use hinter_core::store::{WriteOp, WriteResult};
use hinter_core::{JobState, Store, StoreError};
use serde_json::{json, Value};
use std::sync::Arc;

fn token(name: &str, scopes: &[Scope], queues: Option<&[&str]>) -> NewToken {
    NewToken {
        name: name.to_string(),
        hash: hash_secret(&format!("secret of {name}")),
        scopes: scopes.to_vec(),
        queues: queues.map(|q| q.iter().map(|s| s.to_string()).collect()),
    }
}

async fn audit(store: &dyn Store) -> Vec<AuditEntry> {
    store.audit_list(None, 1000).await.expect("audit_list")
}

fn audit_entry(actor: &str, action: &str, target: &str) -> NewAudit {
    NewAudit {
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        detail: Value::Null,
    }
}

/// Tokens are stored with every field and listed by name; revoking deletes one (its name can
/// be used again); each change is recorded with its actor in the audit record.
pub async fn tokens_create_list_revoke(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    assert_eq!(store.token_list().await.expect("list"), Vec::new());
    let web = token("web", &[Scope::Enqueue], Some(&["mail", "default"]));
    let ops = token("ops", &[Scope::Admin, Scope::Read], None);
    let created = store
        .token_create(web.clone(), ACTOR_CLI, now)
        .await
        .expect("create web");
    let expected_web = TokenInfo {
        name: "web".into(),
        hash: web.hash.clone(),
        scopes: vec![Scope::Enqueue],
        queues: Some(vec!["mail".into(), "default".into()]),
        created_at: now,
    };
    assert_eq!(created, expected_web);
    store
        .token_create(ops.clone(), "admin-token", now + secs(1))
        .await
        .expect("create ops");
    let listed = store.token_list().await.expect("list");
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["ops", "web"]
    );
    assert_eq!(listed[1], expected_web);
    assert_eq!(listed[0].scopes, vec![Scope::Admin, Scope::Read]);
    assert_eq!(listed[0].queues, None);
    assert_eq!(listed[0].hash, ops.hash);

    let revoked = store
        .token_revoke("web", ACTOR_CLI, now + secs(2))
        .await
        .expect("revoke");
    assert_eq!(revoked, expected_web);
    assert_eq!(
        store
            .token_list()
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.name)
            .collect::<Vec<_>>(),
        ["ops"]
    );
    // The name is free again.
    store
        .token_create(token("web", &[Scope::Read], None), ACTOR_CLI, now + secs(3))
        .await
        .expect("create web again");

    let entries = audit(store).await;
    let summary: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("cli", "token.create", "web"),
            ("cli", "token.revoke", "web"),
            ("admin-token", "token.create", "ops"),
            ("cli", "token.create", "web"),
        ]
    );
    assert_eq!(entries[3].at, now);
    assert_eq!(
        entries[3].detail,
        json!({"scopes": ["enqueue"], "queues": ["mail", "default"]})
    );
    assert!(
        entries.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
}

/// A taken name is a conflict and a revoke of an unknown name is `Unknown`; neither changes
/// anything, the audit record included. Bad input is refused naming the field.
pub async fn tokens_refuse_duplicates_unknown_names_and_bad_input(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    store
        .token_create(token("web", &[Scope::Enqueue], None), ACTOR_CLI, now)
        .await
        .expect("create");
    let before = store.token_list().await.expect("list");
    let duplicate = store
        .token_create(token("web", &[Scope::Admin], None), ACTOR_CLI, now)
        .await;
    assert!(
        matches!(&duplicate, Err(StoreError::Conflict(m)) if m.contains("\"web\"")),
        "{duplicate:?}"
    );
    let unknown = store.token_revoke("nobody", ACTOR_CLI, now).await;
    assert!(
        matches!(&unknown, Err(StoreError::Unknown(m)) if m.contains("\"nobody\"")),
        "{unknown:?}"
    );
    for (bad, field) in [
        (token("a b", &[Scope::Read], None), "name"),
        (token("ok", &[], None), "scopes"),
        (token("ok", &[Scope::Read], Some(&[])), "queues"),
        (
            NewToken {
                hash: "not-a-hash".into(),
                ..token("ok", &[Scope::Read], None)
            },
            "hash",
        ),
    ] {
        let answer = store.token_create(bad, ACTOR_CLI, now).await;
        assert!(
            matches!(&answer, Err(StoreError::Invalid(e)) if e.field == field),
            "{field}: {answer:?}"
        );
    }
    assert_eq!(store.token_list().await.expect("list"), before);
    let entries = audit(store).await;
    assert_eq!(
        entries.len(),
        1,
        "only the first create is recorded: {entries:?}"
    );
}

/// An admin action and its audit entry commit together: cancel, retry and pause with their
/// entries in one unit; a unit whose action fails leaves no entry.
pub async fn audit_is_written_with_its_action(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    let id = insert(store, job("report"), now).await.id;
    let results = store
        .write_unit(
            vec![
                WriteOp::Cancel(id),
                WriteOp::Audit(NewAudit {
                    detail: json!({"queue": "default"}),
                    ..audit_entry("ops", "job.cancel", &id.to_string())
                }),
            ],
            now,
        )
        .await
        .expect("cancel unit");
    assert!(matches!(&results[0], WriteResult::Cancelled(job) if job.state == JobState::Cancelled));
    assert!(matches!(results[1], WriteResult::Audited(_)));
    let results = store
        .write_unit(
            vec![
                WriteOp::Retry(id),
                WriteOp::Audit(audit_entry("ops", "job.retry", &id.to_string())),
            ],
            now + secs(1),
        )
        .await
        .expect("retry unit");
    assert!(matches!(&results[0], WriteResult::Retried(job) if job.state == JobState::Queued));
    assert_eq!(get(store, id).await.state, JobState::Queued);
    store
        .write_unit(
            vec![
                WriteOp::QueuePause {
                    queue: "default".into(),
                    paused: true,
                },
                WriteOp::Audit(audit_entry("(no auth)", "queue.pause", "default")),
            ],
            now + secs(2),
        )
        .await
        .expect("pause unit");
    let queues = store.queue_list().await.expect("queues");
    assert!(queues.iter().any(|q| q.name == "default" && q.paused));

    // A retry of a queued job is refused: the unit, its audit entry included, is undone.
    let refused = store
        .write_unit(
            vec![
                WriteOp::Audit(audit_entry("ops", "job.retry", &id.to_string())),
                WriteOp::Retry(id),
            ],
            now + secs(3),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );

    let entries = audit(store).await;
    let summary: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("(no auth)", "queue.pause"),
            ("ops", "job.retry"),
            ("ops", "job.cancel")
        ]
    );
    assert_eq!(entries[2].detail, json!({"queue": "default"}));
    assert_eq!(entries[2].target, id.to_string());
    assert_eq!(entries[0].at, now + secs(2));
}

/// The audit record pages back from the newest entry with `before` and `limit`.
pub async fn audit_pages_newest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let now = base_time();
    for i in 0..5 {
        store
            .write_unit(
                vec![WriteOp::Audit(audit_entry(
                    "ops",
                    "queue.pause",
                    &format!("q{i}"),
                ))],
                now + secs(i),
            )
            .await
            .expect("audit");
    }
    let first = store.audit_list(None, 2).await.expect("page");
    assert_eq!(
        first.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["q4", "q3"]
    );
    let second = store.audit_list(Some(first[1].id), 2).await.expect("page");
    assert_eq!(
        second.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["q2", "q1"]
    );
    let last = store
        .audit_list(Some(second[1].id), 10)
        .await
        .expect("page");
    assert_eq!(
        last.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["q0"]
    );
    assert!(store
        .audit_list(Some(last[0].id), 10)
        .await
        .expect("page")
        .is_empty());
    assert!(store.audit_list(None, 0).await.expect("page").is_empty());
}

/// A token at every bound — the longest name, the most queues, each of the longest name — is
/// stored and listed back exactly; one queue more, or a queue name one character longer, is
/// refused naming the field and stores nothing.
pub async fn tokens_at_the_limits_round_trip(store: Arc<dyn Store>) {
    use hinter_core::access::{MAX_TOKEN_NAME_LEN, MAX_TOKEN_QUEUES};
    use hinter_core::definition::MAX_NAME_LEN;
    let store = &*store;
    let now = base_time();
    let queues: Vec<String> = (0..MAX_TOKEN_QUEUES)
        .map(|i| format!("{i:03}{}", "q".repeat(MAX_NAME_LEN - 3)))
        .collect();
    let name = "n".repeat(MAX_TOKEN_NAME_LEN);
    let widest = NewToken {
        name: name.clone(),
        hash: hash_secret("widest"),
        scopes: vec![Scope::Enqueue, Scope::Read, Scope::Work, Scope::Admin],
        queues: Some(queues.clone()),
    };
    store
        .token_create(widest, ACTOR_CLI, now)
        .await
        .expect("create the widest token");
    let listed = store.token_list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, name);
    assert_eq!(
        listed[0].queues.as_ref(),
        Some(&queues),
        "queues kept in order"
    );
    let mut too_many = queues.clone();
    too_many.push("one-more".into());
    let mut too_long = queues.clone();
    too_long[7] = "q".repeat(MAX_NAME_LEN + 1);
    for (queues, field) in [(too_many, "queues"), (too_long, "queues[7]")] {
        let answer = store
            .token_create(
                NewToken {
                    name: "other".into(),
                    hash: hash_secret("other"),
                    scopes: vec![Scope::Read],
                    queues: Some(queues),
                },
                ACTOR_CLI,
                now,
            )
            .await;
        assert!(
            matches!(&answer, Err(StoreError::Invalid(e)) if e.field == field),
            "{field}: {answer:?}"
        );
    }
    let long_name = store
        .token_create(
            token(&"n".repeat(MAX_TOKEN_NAME_LEN + 1), &[Scope::Read], None),
            ACTOR_CLI,
            now,
        )
        .await;
    assert!(
        matches!(&long_name, Err(StoreError::Invalid(e)) if e.field == "name"),
        "{long_name:?}"
    );
    assert_eq!(store.token_list().await.expect("list").len(), 1);
}
