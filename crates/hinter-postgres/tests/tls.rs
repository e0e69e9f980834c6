//! PostgreSQL over TLS, against the cluster `.ci/run` sets up: a role that may log in over
//! TLS only (`HINTER_TEST_TLS_DATABASE_URL`) and the CA that signed the server's certificate
//! (`HINTER_TEST_TLS_CA`). The certificate names `localhost` and `127.0.0.1`.
//!
//! Without those variables the tests say so and pass, except under CI, where they fail.

use chrono::Utc;
use hinter_core::store::LeaseRequest;
use hinter_core::{NewJob, Store, StoreError};
use hinter_postgres::{PostgresOptions, PostgresStore, TestSchema};
use std::io::Write;
use std::time::Duration;

const URL_VAR: &str = "HINTER_TEST_TLS_DATABASE_URL";
const CA_VAR: &str = "HINTER_TEST_TLS_CA";

/// The TLS-only role's URL (no `sslmode`) and the test CA's path; `None` (with a note) when
/// they are not set outside CI.
fn tls_database() -> Option<(String, String)> {
    let url = std::env::var(URL_VAR).ok().filter(|v| !v.is_empty());
    let ca = std::env::var(CA_VAR).ok().filter(|v| !v.is_empty());
    match (url, ca) {
        (Some(url), Some(ca)) => Some((url, ca)),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{URL_VAR} and {CA_VAR} must be set under CI (.ci/run exports them)")
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "note: {URL_VAR} and {CA_VAR} are not both set, so PostgreSQL TLS was not \
                 tested; .ci/run (as root) sets up the TLS-only role and the test CA and \
                 exports both"
            );
            None
        }
    }
}

/// `url` with more query parameters.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// The same database reached at 127.0.0.1 under a host name the certificate does not hold
/// (`hostaddr` gives the address, `host` the name TLS checks), as a key=value string.
fn under_wrong_name(url: &str, params: &str) -> String {
    let config: hinter_postgres::tokio_postgres::Config = url.parse().expect("a valid URL");
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    format!(
        "host=wrong-name.invalid hostaddr=127.0.0.1 port={} user={} password={password} \
         dbname={} {params}",
        config.get_ports().first().copied().unwrap_or(5432),
        config.get_user().unwrap_or("postgres"),
        config.get_dbname().unwrap_or("postgres"),
    )
}

fn options(schema: &TestSchema) -> PostgresOptions {
    PostgresOptions {
        schema: Some(schema.name.clone()),
        max_connections: 4,
        connect_timeout: Duration::from_secs(10),
        ..PostgresOptions::default()
    }
}

/// Connects a store at `url` (migrating a fresh schema), enqueues a job and leases it, and
/// checks that the connection is encrypted.
async fn store_works_over_tls(url: &str) {
    let schema = TestSchema::fresh(url, "hinter_tls_");
    let store = PostgresStore::connect(url, options(&schema))
        .await
        .unwrap_or_else(|e| panic!("connect over TLS: {e}"));
    let now = Utc::now();
    let job = NewJob::new("tls_job", serde_json::json!({"over": "tls"}));
    let id = job.id;
    let inserted = store
        .job_insert_many(vec![job], now)
        .await
        .expect("enqueue over TLS");
    assert_eq!(inserted.len(), 1);
    let leased = store
        .job_lease(LeaseRequest {
            queues: vec!["default".into()],
            jobs: Vec::new(),
            worker_id: "tls-worker".into(),
            max: 1,
            lease_for: Duration::from_secs(60),
            now,
        })
        .await
        .expect("lease over TLS");
    assert_eq!(leased.len(), 1, "the job is leased");
    assert_eq!(leased[0].id, id);

    let session = hinter_postgres::connect_session(url)
        .await
        .expect("a session over TLS");
    let row = session
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    assert!(row.get::<_, bool>(0), "the connection is encrypted");
    drop(store);
}

fn connect_error(result: Result<PostgresStore, StoreError>) -> String {
    match result {
        Ok(_) => panic!("the connection was expected to fail"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encrypts_without_checking_the_certificate() {
    let Some((url, _)) = tls_database() else {
        return;
    };
    store_works_over_tls(&with_params(&url, "sslmode=require")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_test_ca() {
    let Some((url, ca)) = tls_database() else {
        return;
    };
    store_works_over_tls(&with_params(
        &url,
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_certificate_for_another_host_and_verify_ca_takes_it() {
    let Some((url, ca)) = tls_database() else {
        return;
    };
    let wrong = under_wrong_name(&url, &format!("sslmode=verify-full sslrootcert={ca}"));
    let schema = TestSchema::fresh(&url, "hinter_tls_");
    let err = connect_error(PostgresStore::connect(&wrong, options(&schema)).await);
    assert!(
        err.contains("not valid for name \"wrong-name.invalid\"")
            && err.contains("does not name the host"),
        "{err}"
    );
    assert!(
        !err.contains(":hinter_tls@") && !err.contains("password"),
        "no password: {err}"
    );

    // verify-ca checks the chain only: the same connection is fine.
    let chain_only = under_wrong_name(&url, &format!("sslmode=verify-ca sslrootcert={ca}"));
    let session = hinter_postgres::connect_session(&chain_only)
        .await
        .unwrap_or_else(|e| panic!("verify-ca ignores the host name: {e}"));
    session.simple_query("SELECT 1").await.expect("a query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_without_the_ca_fails_and_says_what_to_give() {
    let Some((url, _)) = tls_database() else {
        return;
    };
    let schema = TestSchema::fresh(&url, "hinter_tls_");
    for mode in ["verify-full", "verify-ca"] {
        let err = connect_error(
            PostgresStore::connect(
                &with_params(&url, &format!("sslmode={mode}")),
                options(&schema),
            )
            .await,
        );
        assert!(
            err.contains("UnknownIssuer") && err.contains("sslrootcert=PATH"),
            "{mode}: {err}"
        );
    }
    // A CA that did not sign the server's certificate.
    let other_ca = std::env::temp_dir().join(format!("hinter-other-ca-{}.pem", std::process::id()));
    std::fs::write(&other_ca, make_other_ca()).expect("write a CA file");
    let err = connect_error(
        PostgresStore::connect(
            &with_params(
                &url,
                &format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
            ),
            options(&schema),
        )
        .await,
    );
    let _ = std::fs::remove_file(&other_ca);
    assert!(
        err.contains("UnknownIssuer") && err.contains(&other_ca.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_connection_of_the_tls_only_role_is_refused() {
    let Some((url, _)) = tls_database() else {
        return;
    };
    let schema = TestSchema::fresh(&url, "hinter_tls_");
    let err = connect_error(
        PostgresStore::connect(&with_params(&url, "sslmode=disable"), options(&schema)).await,
    );
    assert!(
        err.contains("pg_hba.conf rejects connection") && err.contains("no encryption"),
        "{err}"
    );
    // The default, `prefer`, takes the TLS the server offers.
    store_works_over_tls(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_file_is_named() {
    let Some((url, _)) = tls_database() else {
        return;
    };
    let schema = TestSchema::fresh(&url, "hinter_tls_");
    let err = connect_error(
        PostgresStore::connect(
            &with_params(&url, "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
            options(&schema),
        )
        .await,
    );
    assert!(
        err.contains("cannot read sslrootcert /nonexistent/ca.pem"),
        "{err}"
    );
}

/// A CA certificate of its own, which signed nothing the test server holds.
fn make_other_ca() -> String {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).expect("a CA certificate").pem()
}
