//! The `hinter` command: server, workers, client commands and the benchmark.

mod bench;
mod bench_pg;
mod client_cmds;
mod exec;
mod serve;
mod tokens;
mod worker_cmd;
mod worker_store;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "hinter",
    version,
    about = "Durable background jobs in one binary"
)]
struct Cli {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "HINTER_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"], global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API, maintenance and workers on one store.
    Serve(serve::ServeArgs),
    /// Measure throughput and latency on a temporary store.
    Bench(bench::BenchArgs),
    /// Bring the store's schema up to date and exit (serve and workers also do it at start).
    Migrate(serve::StoreArgs),
    /// Run a command for each job of some queues, leased from a hinter server (--server) or
    /// straight from the store (--database/--data-dir)
    Worker(worker_cmd::WorkerArgs),
    /// Create, list and revoke API tokens, straight on the store (--data-dir/--database)
    Tokens(tokens::TokensArgs),
    #[command(flatten)]
    Client(client_cmds::ClientCommand),
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for people: not when stderr goes to a file, a pipe or a log collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Exits with status 2 and `message` as a usage error of `hinter worker`.
fn worker_usage_error(message: String) -> ! {
    let mut command = Cli::command();
    command.build();
    let mut worker = command
        .find_subcommand("worker")
        .cloned()
        .unwrap_or_else(Cli::command);
    worker
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The worker's mode depends on where its flags came from (command line or environment).
    let worker_mode = match (&cli.command, matches.subcommand_matches("worker")) {
        (Command::Worker(args), Some(sub)) => match args.mode(sub) {
            Ok(mode) => Some(mode),
            Err(message) => worker_usage_error(message),
        },
        _ => None,
    };
    init_logging(&cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let result = match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::Bench(args) => bench::bench(args).await,
            Command::Migrate(args) => args.migrate().await.map(|(version, place)| {
                println!("schema version {version}: {place}");
            }),
            Command::Worker(args) => match worker_mode {
                Some(mode) => worker_cmd::run(args, mode).await,
                None => Err(anyhow::anyhow!("no worker mode was chosen")),
            },
            Command::Tokens(args) => return tokens::run(args).await,
            // Client commands print their own errors and choose their exit code.
            Command::Client(cmd) => {
                return client_cmds::run(cmd).await.unwrap_or(ExitCode::FAILURE)
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                // The token is missing or not allowed: the client commands' exit code.
                match e
                    .downcast_ref::<hinter_client::Error>()
                    .and_then(|e| e.status())
                {
                    Some(401 | 403) => ExitCode::from(client_cmds::exit::NO_PERMISSION),
                    _ => ExitCode::FAILURE,
                }
            }
        }
    })
}
