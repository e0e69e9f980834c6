//! The client against the real server over HTTPS, with a CA made for the test: trusted
//! through the builder it works; without it, or for another host name, it fails with
//! [`Error::Tls`] saying why.

use hinter_client::{Client, EnqueueRequest, Error, TlsProblem};
use hinter_server::{AppState, ConnLimits, ServerConfig, TlsConfig};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A CA's certificate, and a server certificate (for `localhost` only) and key it signed.
fn certs() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hinter test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");
    let key = rcgen::KeyPair::generate().expect("a server key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("server parameters")
        .signed_by(&key, &ca)
        .expect("a server certificate");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// Serves the API over TLS on a free port until the runtime ends; answers the port.
async fn https_server(cert: &str, key: &str, dir: &tempfile::TempDir) -> u16 {
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("hinter.db"), SqliteOptions::default())
            .await
            .expect("open store"),
    );
    let state = AppState {
        store: store.clone(),
        cluster: store,
        clock: Arc::new(hinter_core::SystemClock),
        definitions: Default::default(),
        config: Arc::new(ServerConfig::default()),
        ready: Arc::new(AtomicBool::new(true)),
        metrics: hinter_server::Metrics::new(),
        hub: Default::default(),
    };
    let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes()).expect("certificate and key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(hinter_server::serve_tls(
        listener,
        state,
        ConnLimits::default(),
        tls,
        std::future::pending(),
    ));
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaches_an_https_server_with_a_custom_ca() {
    let (ca, cert, key) = certs();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = https_server(&cert, &key, &dir).await;
    let url = format!("https://localhost:{port}");

    // From PEM text.
    let client = Client::builder(&url)
        .ca_certificate_pem(ca.clone())
        .build()
        .expect("a client");
    let enqueued = client
        .enqueue(&EnqueueRequest::new(
            "over_tls",
            serde_json::json!({"n": 1}),
        ))
        .await
        .expect("enqueue over https");
    let job = client
        .get_job(enqueued.job.id, None)
        .await
        .expect("the job");
    assert_eq!(job.job, "over_tls");

    // From a file.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).expect("write the CA");
    let client = Client::builder(&url)
        .ca_file(&ca_file)
        .build()
        .expect("a client");
    let health = client.healthz().await.expect("healthz over https");
    assert_eq!(health.status, "ok");

    // Without the CA: the system's roots do not know it.
    let err = Client::new(&url, None)
        .expect("a client")
        .healthz()
        .await
        .expect_err("an untrusted certificate");
    match &err {
        Error::Tls {
            url: at,
            problem,
            reason,
        } => {
            assert_eq!(at, &url);
            assert_eq!(*problem, TlsProblem::UntrustedCertificate);
            assert!(
                reason.contains("not signed by a CA this client trusts")
                    && reason.contains("UnknownIssuer"),
                "{reason}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(!err.is_unavailable(), "trying again does not help");

    // The right CA, but an address the certificate does not name.
    let err = Client::builder(format!("https://127.0.0.1:{port}"))
        .ca_certificate_pem(ca)
        .build()
        .expect("a client")
        .healthz()
        .await
        .expect_err("a certificate for another name");
    assert!(
        matches!(&err, Error::Tls { reason, problem: TlsProblem::WrongHostName, .. } if reason.contains("not for the host name")),
        "{err:?}"
    );
}
