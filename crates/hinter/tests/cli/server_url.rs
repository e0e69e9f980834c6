//! Which server the client commands talk to: `--server`, `HINTER_SERVER`, and no server at all.

use crate::harness::{free_port, id_in, start_server, Cli, TestDir};

/// Every client command, run against a URL where nothing listens, exits 69 naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_exits_69_naming_the_url() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let id = uuid::Uuid::now_v7().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["enqueue", "x", "{}"],
        vec!["enqueue", "x", "{}", "--wait", "--wait-timeout", "5s"],
        vec!["jobs", "list"],
        vec!["jobs", "show", &id],
        vec!["jobs", "cancel", &id],
        vec!["jobs", "retry", &id],
        vec!["queues", "list"],
        vec!["queues", "pause", "q"],
        vec!["dead", "list"],
        vec!["dead", "retry", "--all"],
        vec!["dead", "retry", &id],
    ];
    for args in commands {
        let out = Cli::new(&args)
            .arg("--server")
            .arg(&url)
            .run()
            .await
            .code(69)
            .no_stdout()
            .stderr_has(&format!("cannot reach the hinter server at {url}"))
            .stderr_has("hint: is `hinter serve` running there?");
        assert!(out.stderr.starts_with("error: "), "{out:?}");
        assert!(out.took.as_secs() < 20, "took too long to give up: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinter_server_env_is_honoured() {
    let dir = TestDir::new("server-env");
    let server = start_server(&dir).await;

    // The environment names the server: the job lands there.
    let out = Cli::new(&["enqueue", "from-env", r#"{"n":1}"#])
        .env("HINTER_SERVER", server.base())
        .run()
        .await
        .ok();
    let id = id_in(out.stdout.trim(), "enqueued ");
    assert_eq!(server.job(&id).await["job"], "from-env");
    let out = Cli::new(&["jobs", "list", "--json"])
        .env("HINTER_SERVER", server.base())
        .run()
        .await
        .ok();
    assert_eq!(out.json()["jobs"][0]["id"], id.as_str(), "{out:?}");

    // A dead URL in the environment is used (not the default) and named.
    let dead = format!("http://127.0.0.1:{}", free_port());
    Cli::new(&["queues", "list"])
        .env("HINTER_SERVER", &dead)
        .run()
        .await
        .code(69)
        .stderr_has(&format!("cannot reach the hinter server at {dead}"));

    // --server wins over the environment.
    let out = Cli::new(&["enqueue", "from-flag"])
        .env("HINTER_SERVER", &dead)
        .arg("--server")
        .arg(server.base())
        .run()
        .await
        .ok();
    let flagged = id_in(out.stdout.trim(), "enqueued ");
    assert_eq!(server.job(&flagged).await["job"], "from-flag");

    // A URL without a scheme means http://.
    let bare = server.addr.to_string();
    let out = Cli::new(&["jobs", "show", &flagged, "--server", &bare])
        .run()
        .await
        .ok();
    assert!(
        out.stdout.contains(&format!("id:           {flagged}")),
        "{out:?}"
    );

    // A URL that is not one: exit 2.
    Cli::new(&["jobs", "list", "--server", "ftp://example.com"])
        .run()
        .await
        .code(2)
        .no_stdout()
        .stderr_has("error: ");
}
