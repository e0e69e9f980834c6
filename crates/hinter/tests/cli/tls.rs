//! HTTPS end to end: `hinter serve --tls-cert/--tls-key` with a certificate from a CA made
//! for the test, the client commands with `--ca-file` (or `HINTER_CA_FILE`) and without it,
//! and `hinter worker --server https://…` running a job.

use crate::harness::{free_port, id_in, wait_for, Cli, TestDir};
use crate::support::{hinter_command, ChildGuard};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The files of a test CA and of a server certificate it signed for `localhost` and
/// `127.0.0.1`.
struct CertFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn cert_files(dir: &TestDir) -> CertFiles {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hinter test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA certificate");
    let key = rcgen::KeyPair::generate().expect("a server key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("server parameters")
        .signed_by(&key, &ca)
        .expect("a server certificate");
    CertFiles {
        ca: dir.write("ca.pem", &ca.pem()),
        cert: dir.write("server.pem", &cert.pem()),
        key: dir.write("server.key", &key.serialize_pem()),
    }
}

/// `hinter serve --tls-cert --tls-key` on a free port, ready; and its https URL.
async fn start_https_server(dir: &TestDir, certs: &CertFiles) -> (ChildGuard, String) {
    let port = free_port();
    let mut command = hinter_command();
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.data_dir())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key);
    let mut server = ChildGuard::spawn(dir, "https-server", &mut command);
    let url = format!("https://localhost:{port}");
    let ca = std::fs::read(&certs.ca).expect("the CA");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let readyz = format!("{url}/readyz");
    wait_for(
        Duration::from_secs(30),
        "the https server to be ready",
        || {
            server.assert_running();
            let request = client.get(&readyz).send();
            async move {
                match request.await {
                    Ok(answer) if answer.status() == 200 => Some(()),
                    _ => None,
                }
            }
        },
    )
    .await;
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_reach_an_https_server_with_the_ca_file() {
    let dir = TestDir::new("https-cli");
    let certs = cert_files(&dir);
    let (_server, url) = start_https_server(&dir, &certs).await;
    let ca = certs.ca.to_str().expect("a UTF-8 path");

    let out = Cli::new(&["enqueue", "over_tls", r#"{"n":1}"#])
        .arg("--server")
        .arg(&url)
        .arg("--ca-file")
        .arg(ca)
        .run()
        .await
        .ok();
    let id = id_in(out.stdout.trim(), "enqueued ");
    let out = Cli::new(&["jobs", "show", &id, "--json"])
        .arg("--server")
        .arg(&url)
        .arg("--ca-file")
        .arg(ca)
        .run()
        .await
        .ok();
    assert_eq!(out.json()["job"], "over_tls", "{out:?}");
    // The environment variable does the same.
    let out = Cli::new(&["jobs", "list", "--json"])
        .arg("--server")
        .arg(&url)
        .env("HINTER_CA_FILE", ca)
        .run()
        .await
        .ok();
    assert_eq!(out.json()["jobs"][0]["id"], id.as_str(), "{out:?}");

    // Without the CA the certificate is not trusted: exit 69, saying so and what to pass.
    let out = Cli::new(&["jobs", "show", &id])
        .arg("--server")
        .arg(&url)
        .run()
        .await
        .code(69)
        .no_stdout()
        .stderr_has(&format!("TLS with the hinter server at {url} failed"))
        .stderr_has("the server's certificate is not signed by a CA this client trusts")
        .stderr_has(
            "hint: pass the CA certificate that signed the server's certificate with --ca-file",
        );
    assert!(!out.stderr.contains("is `hinter serve` running"), "{out:?}");

    // A CA file that is not one: exit 2, naming it.
    let bogus = dir.write("bogus.pem", "not a certificate\n");
    Cli::new(&["jobs", "list"])
        .arg("--server")
        .arg(&url)
        .arg("--ca-file")
        .arg(bogus.to_str().expect("UTF-8"))
        .run()
        .await
        .code(2)
        .stderr_has(&format!(
            "cannot use the CA certificate {}",
            bogus.display()
        ));

    // Plain http:// to the TLS port gets no HTTP answer.
    Cli::new(&["jobs", "list"])
        .arg("--server")
        .arg(&url.replace("https://", "http://"))
        .run()
        .await
        .code(69);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_a_job_from_an_https_server() {
    let dir = TestDir::new("https-worker");
    let certs = cert_files(&dir);
    let (_server, url) = start_https_server(&dir, &certs).await;
    let ca = certs.ca.to_str().expect("a UTF-8 path");
    let marker = dir.path().join("ran");

    let out = Cli::new(&["enqueue", "touch", r#"{}"#])
        .arg("--server")
        .arg(&url)
        .arg("--ca-file")
        .arg(ca)
        .run()
        .await
        .ok();
    let id = id_in(out.stdout.trim(), "enqueued ");

    let mut command = hinter_command();
    command
        .args(["worker", "--server", &url, "--ca-file", ca, "--"])
        .arg("/bin/sh")
        .arg("-c")
        .arg(r#"touch "$0""#)
        .arg(&marker)
        .stdin(Stdio::null());
    let mut worker = ChildGuard::spawn(&dir, "worker", &mut command);
    wait_for(Duration::from_secs(30), "the job to succeed", || {
        worker.assert_running();
        let show = Cli::new(&["jobs", "show", &id, "--json"])
            .arg("--server")
            .arg(&url)
            .arg("--ca-file")
            .arg(ca)
            .run();
        async move {
            let out = show.await.ok();
            (out.json()["state"] == "succeeded").then_some(())
        }
    })
    .await;
    assert!(marker.exists(), "the job's command ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_names_a_missing_or_unusable_certificate_at_start() {
    let dir = TestDir::new("https-bad-files");
    let certs = cert_files(&dir);
    let missing = dir.path().join("missing.pem");
    let run = |args: Vec<std::ffi::OsString>| {
        let mut command = hinter_command();
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.data_dir())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(args);
        command.output().expect("hinter serve runs")
    };
    for (args, expected) in [
        (
            vec!["--tls-cert".into(), certs.cert.clone().into_os_string()],
            "--tls-cert needs --tls-key".to_string(),
        ),
        (
            vec!["--tls-key".into(), certs.key.clone().into_os_string()],
            "--tls-key needs --tls-cert".to_string(),
        ),
        (
            vec![
                "--tls-cert".into(),
                missing.clone().into_os_string(),
                "--tls-key".into(),
                certs.key.clone().into_os_string(),
            ],
            format!("cannot read the TLS certificate {}", missing.display()),
        ),
        (
            vec![
                "--tls-cert".into(),
                certs.cert.clone().into_os_string(),
                "--tls-key".into(),
                certs.ca.clone().into_os_string(),
            ],
            format!("the TLS key {} holds no private key", certs.ca.display()),
        ),
    ] {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&expected),
            "expected {expected:?} in:\n{stderr}"
        );
    }
}
