//! Transactional enqueue: an order and the job that sends its receipt are written in one
//! transaction of the application's own connection, so there is never an order without its
//! receipt job, nor a receipt for an order that was rolled back.
//!
//! ```text
//! HINTER_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run -p hinter-postgres --example transactional_enqueue
//! ```
//!
//! Uses (and drops at the end) the schemas `example_shop` and `hinter_example`.

use chrono::Utc;
use hinter_core::store::{Completion, LeaseRequest};
use hinter_core::{Definitions, JobDefinition, JobSpec, Store, StoreEvent};
use hinter_postgres::tokio_postgres::{self, NoTls};
use hinter_postgres::{PostgresOptions, PostgresStore};
use serde_json::json;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("HINTER_DATABASE_URL")
        .map_err(|_| "set HINTER_DATABASE_URL to postgres://user:password@host:port/db")?;

    // hinter's side: creates (or migrates) its schema. A `hinter serve` or `hinter worker`
    // on `--database URL --schema hinter_example` would do the same.
    let store = PostgresStore::connect(
        &url,
        PostgresOptions {
            schema: Some("hinter_example".into()),
            ..PostgresOptions::default()
        },
    )
    .await?;
    let mut wake_ups = store.subscribe();

    // The application's side: its own connection and tables.
    let (mut app, connection) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(connection);
    app.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS example_shop;
         CREATE TABLE IF NOT EXISTS example_shop.orders (id BIGINT PRIMARY KEY, item TEXT)",
    )
    .await?;

    // Jobs are built as the API builds them: validated, with the definition's defaults.
    let definitions = Definitions::new();
    definitions.insert(JobDefinition {
        name: "send_receipt".into(),
        queue: Some("mail".into()),
        max_attempts: Some(5),
        ..JobDefinition::default()
    });
    let receipt = |order: i64| {
        definitions.resolve(
            JobSpec::new("send_receipt", json!({ "order": order })),
            Utc::now(),
        )
    };

    // 1. Committed: the order and its job.
    let tx = app.transaction().await?;
    tx.execute(
        "INSERT INTO example_shop.orders VALUES (1, 'book') ON CONFLICT DO NOTHING",
        &[],
    )
    .await?;
    let inserted = store.enqueue_in(&tx, vec![receipt(1)?], Utc::now()).await?;
    let job_id = inserted[0].job.id;
    tx.commit().await?;
    println!("order 1 committed with job {job_id}");

    // 2. Rolled back: neither the order nor the job exist, and no worker was woken.
    let tx = app.transaction().await?;
    tx.execute(
        "INSERT INTO example_shop.orders VALUES (2, 'pen') ON CONFLICT DO NOTHING",
        &[],
    )
    .await?;
    let rolled_back = store.enqueue_in(&tx, vec![receipt(2)?], Utc::now()).await?[0]
        .job
        .id;
    tx.rollback().await?;
    assert!(store.job_get(rolled_back).await?.is_none());
    println!("order 2 rolled back: job {rolled_back} does not exist");

    // A worker anywhere on the database was woken by the commit and runs the job.
    let woken = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(StoreEvent::JobsAvailable { queue }) = wake_ups.recv().await {
                if queue == "mail" {
                    return;
                }
            }
        }
    })
    .await;
    println!("worker woken by the commit: {}", woken.is_ok());
    let leased = store
        .job_lease(LeaseRequest {
            jobs: Vec::new(),
            queues: vec!["mail".into()],
            worker_id: "example-worker".into(),
            max: 10,
            lease_for: Duration::from_secs(30),
            now: Utc::now(),
        })
        .await?;
    for job in &leased {
        println!("sending the receipt for {}", job.payload);
        store
            .job_complete_many(
                vec![Completion {
                    id: job.id,
                    lease_token: job.lease_token,
                    result: Some(json!("sent")),
                }],
                Utc::now(),
            )
            .await?;
    }
    if let Some(job) = store.job_get(job_id).await? {
        println!("job {job_id} is {}", job.state);
    }

    drop(store);
    app.batch_execute("DROP SCHEMA example_shop CASCADE; DROP SCHEMA hinter_example CASCADE")
        .await?;
    Ok(())
}
