//! `GET /api/v1/events` as Server-Sent Events, served on a loopback socket over a real
//! SQLite store (the cases are in `sse/cases.rs`, run against PostgreSQL by
//! `sse_postgres.rs` too).

mod backend {
    use hinter_core::Backend;
    use hinter_sqlite::{SqliteOptions, SqliteStore};
    use std::sync::Arc;

    /// A fresh store in a temporary directory, and the directory.
    pub async fn open() -> Option<(Arc<dyn Backend>, Box<dyn std::any::Any + Send + Sync>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
            .await
            .expect("open store");
        Some((Arc::new(store), Box::new(dir)))
    }
}

include!("sse/cases.rs");
