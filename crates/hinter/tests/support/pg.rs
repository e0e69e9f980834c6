//! The PostgreSQL test database (`HINTER_TEST_DATABASE_URL`) and a fresh schema per test.
//!
//! Without the variable the PostgreSQL tests explain themselves and pass, except under
//! CI=true, where they fail: CI must never skip them.

/// Names the PostgreSQL database the tests may use.
pub const URL_VAR: &str = "HINTER_TEST_DATABASE_URL";

/// Whether the tests run under CI (`CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `what` cannot run because of `why`: a note (the test then passes), or under CI a panic.
pub fn cannot_run(what: &str, why: &str) {
    if under_ci() {
        panic!("{what} cannot run under CI: {why}");
    }
    eprintln!("note: {what} did not run: {why}");
}

/// The URL in [`URL_VAR`]; `None` (after [`cannot_run`]) when it is not set.
pub fn database_url(what: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) => Some(url),
        Err(_) => {
            cannot_run(
                what,
                &format!("{URL_VAR} is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"),
            );
            None
        }
    }
}

/// Connects to `url`; the connection is driven by a task of the current runtime.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The test database and a schema of this test's own, dropped (with everything in it) when
/// this is dropped. Declare it before the processes using it, so they are killed first.
pub struct TestDb {
    pub url: String,
    pub schema: String,
    _dropped_with: hinter_postgres::TestSchema,
}

impl TestDb {
    /// A fresh `hinter_t…` schema in the database of [`URL_VAR`]; `None` (after a note) when
    /// the variable is not set, unless CI=true.
    pub fn new(test: &str) -> Option<TestDb> {
        let url = database_url(&format!("the multi-process PostgreSQL test {test}"))?;
        Some(TestDb::fresh(&url, "hinter_t"))
    }

    /// A fresh schema named `<prefix><random hex>` in the database `url`.
    pub fn fresh(url: &str, prefix: &str) -> TestDb {
        let schema = hinter_postgres::TestSchema::fresh(url, prefix);
        TestDb {
            url: schema.url.clone(),
            schema: schema.name.clone(),
            _dropped_with: schema,
        }
    }

    /// `--database URL --schema S`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--database".into(),
            self.url.clone(),
            "--schema".into(),
            self.schema.clone(),
        ]
    }
}
