//! Connection limits of `hinter serve`: idle connections, half-sent headers and trickling
//! bodies are closed; past `--max-connections` health checks still answer; long-polls
//! outlive the idle timeout; accept errors (no file descriptors left) do not stop the
//! server; a taken port fails before the data dir is touched.

use crate::support::{hinter_command, wait_until, ChildGuard, Server, TestDir};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a test waits for the server to close a connection it should close.
const CLOSE_WITHIN: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection (EOF or reset); returns what was read.
/// Panics if it is still open after `timeout`.
async fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> String {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    if tokio::time::timeout(timeout, read).await.is_err() {
        panic!("the server did not close the connection within {timeout:?}");
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends one `GET path` on an open connection (keep-alive) and reads its whole answer.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("sending a request");
    read_response(stream).await
}

/// Reads one answer with a Content-Length body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.expect("reading an answer");
            assert!(n > 0, "the connection closed before the answer was whole");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().expect("content-length"))
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return String::from_utf8_lossy(&got).into_owned();
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer within 30s")
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response:?}"))
}

fn body_of(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connecting")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed() {
    let dir = TestDir::new("idle-conns");
    let server = Server::start(
        &dir,
        &[
            "--idle-timeout",
            "1s",
            "--header-timeout",
            "1s",
            "--body-timeout",
            "1s",
        ],
    )
    .await;

    // A connection that never sends anything.
    let mut silent = connect(server.addr).await;
    assert_eq!(read_until_closed(&mut silent, CLOSE_WITHIN).await, "");

    // A keep-alive connection after its answer.
    let mut kept = connect(server.addr).await;
    let answer = get_on(&mut kept, "/healthz").await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(read_until_closed(&mut kept, CLOSE_WITHIN).await, "");

    // Headers that stop half-way.
    let mut half = connect(server.addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .await
        .expect("sending half a header");
    read_until_closed(&mut half, CLOSE_WITHIN).await;

    // A body that stops half-way: 408, then the connection is closed.
    let mut trickle = connect(server.addr).await;
    trickle
        .write_all(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"job\": \"",
        )
        .await
        .expect("sending half a body");
    let answer = read_until_closed(&mut trickle, CLOSE_WITHIN).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(
        body_of(&answer)["error"]["code"],
        "request_timeout",
        "{answer}"
    );

    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_timeout_shorter_than_the_idle_timeout_applies() {
    let dir = TestDir::new("header-timeout");
    // Idle connections would stay for an hour; half-sent headers must still go.
    let server = Server::start(&dir, &["--idle-timeout", "1h", "--header-timeout", "1s"]).await;
    let mut half = connect(server.addr).await;
    half.write_all(b"POST /api/v1/jobs HTTP/1.1\r\n")
        .await
        .expect("sending half a header");
    read_until_closed(&mut half, CLOSE_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_outlive_the_idle_timeout() {
    let dir = TestDir::new("long-poll-idle");
    let server = Server::start(&dir, &["--idle-timeout", "1s"]).await;
    let job = server.enqueue(json!({"job": "slow", "queue": "q"})).await;
    let id = job["id"].as_str().expect("job id").to_string();

    // Each long-poll waits 3s on one connection idle for three idle timeouts.
    let mut conn = connect(server.addr).await;
    let started = Instant::now();
    let answer = get_on(&mut conn, &format!("/api/v1/jobs/{id}?wait=3s")).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(body_of(&answer)["state"], "queued", "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the wait was served in full"
    );

    let body = r#"{"worker_id": "w", "queues": ["empty"], "wait": "3s"}"#;
    let started = Instant::now();
    conn.write_all(
        format!(
            "POST /api/v1/leases HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("sending a lease request");
    let answer = read_response(&mut conn).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    assert_eq!(body_of(&answer)["jobs"], json!([]), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the wait was served in full"
    );

    // Afterwards the idle timeout applies again.
    read_until_closed(&mut conn, CLOSE_WITHIN).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_past_the_connection_cap() {
    let dir = TestDir::new("conn-cap");
    let server = Server::start(&dir, &["--max-connections", "20", "--idle-timeout", "1h"]).await;
    // The harness's own client may hold a pooled connection: fill every place left.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut conn = connect(server.addr).await;
        let answer = get_on(&mut conn, "/healthz").await;
        if body_of(&answer)["error"]["code"] == "overloaded" || status_of(&answer) == 503 {
            break;
        }
        held.push(conn);
    }
    assert!(
        held.len() >= 19,
        "only {} connections were served",
        held.len()
    );

    // Past the cap: health checks answer, other routes get 503 `overloaded` at once.
    for path in ["/healthz", "/readyz"] {
        let mut conn = connect(server.addr).await;
        let answer = get_on(&mut conn, path).await;
        assert_eq!(status_of(&answer), 200, "{path}: {answer}");
    }
    let mut conn = connect(server.addr).await;
    let answer = get_on(&mut conn, "/api/v1/queues").await;
    assert_eq!(status_of(&answer), 503, "{answer}");
    assert_eq!(body_of(&answer)["error"]["code"], "overloaded", "{answer}");
    assert!(server.stderr().contains("connection limit reached"));

    // Closing the held connections frees their places.
    drop(held);
    wait_until(Duration::from_secs(20), "a place under the cap", || async {
        let mut conn = connect(server.addr).await;
        status_of(&get_on(&mut conn, "/api/v1/queues").await) == 200
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_does_not_stop_the_server() {
    let dir = TestDir::new("emfile");
    // 64 open files in all, but a cap that allows far more connections: accepts fail.
    let data_dir = dir.data_dir();
    let mut server = Server::launch(
        "hinter serve with 64 files",
        Server::READY_TIMEOUT,
        Duration::from_secs(30),
        |addr| {
            // hinter_command's environment (no inherited HINTER_* settings), under bash.
            let command = hinter_command();
            let mut shell = Command::new("bash");
            for (key, value) in command.get_envs() {
                match value {
                    Some(value) => shell.env(key, value),
                    None => shell.env_remove(key),
                };
            }
            shell
                .arg("-c")
                .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
                .arg(command.get_program())
                .args(["serve", "--max-connections", "1000", "--listen"])
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(&data_dir);
            ChildGuard::spawn(&dir, "serve", &mut shell)
        },
    )
    .await;
    let mut conns = Vec::new();
    for _ in 0..100 {
        // The kernel completes the handshake even when the server cannot accept.
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(server.addr)).await
        {
            conns.push(c);
        }
    }
    wait_until(
        Duration::from_secs(20),
        "the accept error in the log",
        || async { server.stderr().contains("cannot accept connections") },
    )
    .await;
    drop(conns);
    server.proc.assert_running();
    wait_until(
        Duration::from_secs(30),
        "the server to answer again",
        || async {
            let Ok(mut conn) = TcpStream::connect(server.addr).await else {
                return false;
            };
            status_of(&get_on(&mut conn, "/healthz").await) == 200
        },
    )
    .await;
    server.proc.assert_running();
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_before_the_data_dir_is_touched() {
    let dir = TestDir::new("port-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
    let addr = taken.local_addr().expect("address");
    let data_dir = dir.path().join("never-created");
    let output = hinter_command()
        .arg("serve")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("running hinter serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(!data_dir.exists(), "the data dir was created: {stderr}");
}
