//! The PostgreSQL backend of the shared test cases (`*_postgres.rs`): a store in a fresh
//! schema of the database named by `HINTER_TEST_DATABASE_URL`, dropped with its guard.

use hinter_core::Backend;
use hinter_postgres::{PostgresOptions, PostgresStore, TestSchema};
use std::sync::Arc;

const URL_VAR: &str = "HINTER_TEST_DATABASE_URL";

/// A store in a fresh schema named `<prefix><random>`; `None` (after a note naming `what`)
/// without a test database, unless CI=true, where a missing database fails the test: CI must
/// never skip them.
pub async fn open(
    prefix: &str,
    what: &str,
    max_connections: usize,
) -> Option<(Arc<dyn Backend>, Box<dyn std::any::Any + Send + Sync>)> {
    let Ok(url) = std::env::var(URL_VAR) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{URL_VAR} is not set: CI must run the PostgreSQL {what} tests");
        }
        eprintln!("note: {URL_VAR} is not set; the PostgreSQL {what} tests did not run");
        return None;
    };
    let schema = TestSchema::fresh(&url, prefix);
    let store = PostgresStore::connect(
        &url,
        PostgresOptions {
            schema: Some(schema.name.clone()),
            max_connections,
            ..PostgresOptions::default()
        },
    )
    .await
    .expect("connect to the test database");
    Some((Arc::new(store), Box::new(schema)))
}
