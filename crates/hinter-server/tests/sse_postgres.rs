//! `GET /api/v1/events` as Server-Sent Events over a real PostgreSQL store (a fresh schema
//! per test in the database of `HINTER_TEST_DATABASE_URL`), served on a loopback socket: the
//! same cases as `sse.rs` (`sse/cases.rs`). Without the variable the cases say so and pass, except under
//! CI=true, where they fail: CI must never skip them.

mod backend {
    use hinter_core::Backend;
    use hinter_postgres::{PostgresOptions, PostgresStore, TestSchema};
    use std::sync::Arc;

    const URL_VAR: &str = "HINTER_TEST_DATABASE_URL";

    /// A store in a fresh schema; `None` (after a note) without a test database, unless
    /// CI=true.
    pub async fn open() -> Option<(Arc<dyn Backend>, Box<dyn std::any::Any + Send + Sync>)> {
        let Ok(url) = std::env::var(URL_VAR) else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{URL_VAR} is not set: CI must run the PostgreSQL SSE tests");
            }
            eprintln!("note: {URL_VAR} is not set; the PostgreSQL SSE tests did not run");
            return None;
        };
        let schema = TestSchema::fresh(&url, "hinter_sse_");
        let store = PostgresStore::connect(
            &url,
            PostgresOptions {
                schema: Some(schema.name.clone()),
                max_connections: 4,
                ..PostgresOptions::default()
            },
        )
        .await
        .expect("connect to the test database");
        Some((Arc::new(store), Box::new(schema)))
    }
}

include!("sse/cases.rs");
