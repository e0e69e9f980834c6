//! Test support: a fresh schema per test in the database named by
//! `HINTER_TEST_DATABASE_URL`, dropped when the test ends.
#![allow(dead_code)]

use hinter_postgres::{PostgresOptions, PostgresStore};
use std::io::Write;
use std::sync::Arc;

pub const URL_VAR: &str = "HINTER_TEST_DATABASE_URL";

/// The test database's URL. Panics when it is not set: these tests are only compiled when it
/// was set at build time (see build.rs).
pub fn database_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!("{URL_VAR} was set when the tests were built but is not set now")
    })
}

/// A schema of its own for one test; dropped (with everything in it) on drop.
pub struct TestSchema {
    pub url: String,
    pub name: String,
    _dropped_with: hinter_postgres::TestSchema,
}

impl TestSchema {
    pub fn new() -> Self {
        let schema = hinter_postgres::TestSchema::fresh(&database_url(), "hinter_test_");
        Self {
            url: schema.url.clone(),
            name: schema.name.clone(),
            _dropped_with: schema,
        }
    }

    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            schema: Some(self.name.clone()),
            max_connections: 8,
            ..PostgresOptions::default()
        }
    }

    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, self.options())
            .await
            .expect("connect to the test database")
    }
}

impl Default for TestSchema {
    fn default() -> Self {
        Self::new()
    }
}

/// A store in a fresh schema, for the conformance suite.
pub async fn fresh_store() -> (Arc<dyn hinter_core::Store>, hinter_store_tests::Guard) {
    let schema = TestSchema::new();
    let store = schema.store().await;
    (Arc::new(store), Box::new(schema))
}

/// A backend in a fresh schema, for the cluster conformance suite.
pub async fn fresh_cluster() -> (Arc<dyn hinter_core::Cluster>, hinter_store_tests::Guard) {
    let schema = TestSchema::new();
    let store = schema.store().await;
    (Arc::new(store), Box::new(schema))
}

/// Without a test database: explains how to run the database tests; fails under CI, which
/// must never skip them silently.
pub fn no_database(what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{URL_VAR} is not set: CI must run the PostgreSQL {what} \
             (e.g. {URL_VAR}=postgres://postgres@127.0.0.1:5432/test)"
        );
    }
    // Written past the test harness's capture, so the note shows although the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "note: {URL_VAR} is not set, so the PostgreSQL {what} were not built; set it \
         (e.g. postgres://postgres@127.0.0.1:5432/test) to run them"
    );
}
