//! Runs the store conformance suite (`hinter-store-tests`) against the SQLite backend: every
//! test gets a fresh database in its own temporary directory.

use hinter_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

async fn sqlite_store() -> (Arc<dyn hinter_core::Store>, hinter_store_tests::Guard) {
    let dir = tempfile::TempDir::new().expect("create a temporary directory");
    let store = SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    (Arc::new(store), Box::new(dir))
}

hinter_store_tests::conformance_suite!(sqlite_store);
