//! `hinter enqueue` and lost replies: the command sends an `Idempotency-Key` and retries with
//! it, so a reply lost with its connection never makes a second job.

use crate::harness::{id_in, start_server, Cli, CliApi, CliServer, TestDir};
use crate::support::lossy_proxy::LossyProxy;

/// The server commits the job but the reply is lost twice on the way back (a proxy closes the
/// connection as the answer begins); `hinter enqueue` retries with its key and prints the one
/// job, which is the only job on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_retries_lost_replies_and_makes_one_job() {
    let dir = TestDir::new("enqueue-lost-reply");
    let server = start_server(&dir).await;
    let proxy = LossyProxy::start(server.addr, 2).await;

    let out = Cli::new(&["enqueue", "report", r#"{"day":7}"#])
        .arg("--server")
        .arg(&proxy.base())
        .run()
        .await
        .ok()
        .no_stderr();
    let id = id_in(out.stdout.trim(), "enqueued ");
    assert_eq!(proxy.connections(), 3, "two lost replies, then the answer");
    assert_eq!(server.ids("").await, vec![id], "exactly one job");
}

/// With `--idempotency-key`, running the command again answers the first job; a bad key is a
/// usage error that sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_with_the_same_key_again_prints_the_first_job() {
    let dir = TestDir::new("enqueue-key");
    let server = start_server(&dir).await;
    let run = |payload: &'static str| {
        server
            .cli(&["enqueue", "mail", payload, "--idempotency-key", "order-42"])
            .run()
    };
    let first = run(r#"{"to":"a"}"#).await.ok();
    let id = id_in(first.stdout.trim(), "enqueued ");
    let again = run(r#"{"to":"a"}"#).await.ok();
    assert_eq!(again.stdout, first.stdout);
    assert_eq!(server.ids("").await, vec![id]);

    server
        .cli(&[
            "enqueue",
            "mail",
            r#"{"to":"b"}"#,
            "--idempotency-key",
            "order-42",
        ])
        .run()
        .await
        .code(2)
        .stderr_has("idempotency_key_reused");
    server
        .cli(&["enqueue", "mail", "--idempotency-key", ""])
        .run()
        .await
        .code(2)
        .stderr_has("--idempotency-key");
    assert_eq!(server.ids("").await.len(), 1);
}
