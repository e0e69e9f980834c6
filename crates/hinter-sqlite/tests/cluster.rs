//! Runs the cluster conformance suite (`hinter-store-tests`) against the SQLite backend.

use hinter_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;

async fn sqlite_cluster() -> (Arc<dyn hinter_core::Cluster>, hinter_store_tests::Guard) {
    let dir = tempfile::TempDir::new().expect("create a temporary directory");
    let store = SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    (Arc::new(store), Box::new(dir))
}

hinter_store_tests::cluster_conformance_suite!(sqlite_cluster);
