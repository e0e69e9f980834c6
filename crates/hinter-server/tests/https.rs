//! The API over HTTPS (`serve_tls`), on a real socket with a certificate made for the test:
//! requests over TLS are served, and handshakes that fail or stall neither stop the server
//! nor keep their place under the connection cap.

use hinter_server::{AppState, ConnLimits, ServerConfig, TlsConfig};
use hinter_sqlite::{SqliteOptions, SqliteStore};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test CA's certificate (PEM) and a server certificate and key it signed, for
/// `localhost` and `127.0.0.1`.
struct Certs {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn certs() -> Certs {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hinter test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");
    let key = rcgen::KeyPair::generate().expect("a server key");
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("server parameters");
    let cert = params.signed_by(&key, &ca).expect("a server certificate");
    Certs {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

struct Server {
    port: u16,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(tls: TlsConfig, limits: ConnLimits) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hinter_server::serve_tls(
            listener,
            state,
            limits,
            tls,
            async move {
                let _ = stopped.await;
            },
        ));
        Server {
            port,
            _dir: dir,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops")
            .expect("the server task ends without a panic");
    }
}

fn client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA"))
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_api_over_tls() {
    let certs = certs();
    let tls = TlsConfig::from_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
        .expect("the certificate and key");
    let server = Server::start(tls, ConnLimits::default()).await;
    let client = client(&certs.ca_pem);

    let answer = client
        .post(server.url("/api/v1/jobs"))
        .json(&serde_json::json!({"job": "over_tls", "payload": {"n": 1}}))
        .send()
        .await
        .expect("enqueue over https");
    assert_eq!(answer.status(), 201, "{:?}", answer.text().await);
    let body: serde_json::Value = answer.json().await.expect("json");
    let id = body["job"]["id"].as_str().expect("an id").to_string();
    let job: serde_json::Value = client
        .get(server.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .expect("show over https")
        .json()
        .await
        .expect("json");
    assert_eq!(job["job"], "over_tls");
    // The dashboard's session cookie is `Secure` over HTTPS.
    let logout = client
        .post(server.url("/ui/logout"))
        .send()
        .await
        .expect("log out over https");
    let cookie = logout.headers()["set-cookie"]
        .to_str()
        .expect("text")
        .to_string();
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    // Plain HTTP on the TLS port gets no answer, and does not disturb the server.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", server.port))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP is not served: {plain:?}");
    // A client without the CA refuses the certificate.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let err = untrusting
        .get(server.url("/healthz"))
        .send()
        .await
        .expect_err("an unknown CA");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "the client names the certificate problem: {err:?}"
    );
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("still served");
    assert_eq!(health.status(), 200);
    server.shutdown().await;
}

/// Reads from `stream` until the server closes it; panics if that takes longer than `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for over {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_gives_its_place_back_after_the_header_timeout() {
    let certs = certs();
    let tls = TlsConfig::from_pem(certs.cert_pem.as_bytes(), certs.key_pem.as_bytes())
        .expect("the certificate and key");
    let limits = ConnLimits {
        max_connections: 1,
        idle_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_millis(500),
    };
    let server = Server::start(tls, limits).await;
    let client = client(&certs.ca_pem);

    // Connects and sends half a ClientHello, then nothing: the only slot is taken.
    let mut stalled = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .expect("write");
    // Wait until the server has counted it: a request is then refused as overloaded.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = client
            .get(server.url("/api/v1/queues"))
            .send()
            .await
            .expect("the reserve answers");
        if answer.status() == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled handshake never took the slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    closed_within(&mut stalled, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after the header timeout"
    );
    // The slot is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = client
            .get(server.url("/api/v1/queues"))
            .send()
            .await
            .expect("served");
        if answer.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Garbage instead of a ClientHello: dropped at once, the server goes on.
    let mut garbage = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    closed_within(&mut garbage, Duration::from_secs(2)).await;
    let answer = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("still served");
    assert_eq!(answer.status(), 200);
    server.shutdown().await;
}

#[test]
fn bad_certificate_and_key_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = certs();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let other_key = dir.path().join("other-key.pem");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&cert, &certs.cert_pem).expect("write");
    std::fs::write(&key, &certs.key_pem).expect("write");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().expect("key").serialize_pem(),
    )
    .expect("write");
    std::fs::write(&empty, "nothing here\n").expect("write");
    let missing = dir.path().join("missing.pem");

    TlsConfig::from_pem_files(&cert, &key).expect("a good pair");
    let err = |c: &std::path::Path, k: &std::path::Path| {
        TlsConfig::from_pem_files(c, k)
            .expect_err("a bad pair")
            .to_string()
    };
    let e = err(&missing, &key);
    assert!(
        e.contains("cannot read the TLS certificate") && e.contains("missing.pem"),
        "{e}"
    );
    let e = err(&cert, &missing);
    assert!(
        e.contains("cannot read the TLS key") && e.contains("missing.pem"),
        "{e}"
    );
    let e = err(&empty, &key);
    assert!(
        e.contains("holds no certificate") && e.contains("empty.pem"),
        "{e}"
    );
    let e = err(&cert, &empty);
    assert!(
        e.contains("holds no private key") && e.contains("empty.pem"),
        "{e}"
    );
    // The key of another certificate.
    let e = err(&cert, &other_key);
    assert!(
        e.contains("cannot use the TLS certificate") && e.contains("other-key.pem"),
        "{e}"
    );
    // Key and certificate swapped.
    let e = err(&key, &cert);
    assert!(e.contains("holds no certificate"), "{e}");
}
