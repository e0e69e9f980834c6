//! The `hinter` command: server, workers, client commands and the benchmark.

mod bench;
mod bench_live;
mod bench_pg;
mod bench_reads;
mod bench_workload;
mod callbacks;
mod client_cmds;
mod config;
mod config_cmd;
mod exec;
mod procfs;
mod scripts;
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
    /// Configuration file (docs/configuration.md) [default: ./hinter.toml if it exists]
    #[arg(long, env = config::CONFIG_ENV, value_name = "PATH", global = true)]
    config: Option<std::path::PathBuf>,
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
    /// Show the effective configuration (flags, HINTER_* variables, hinter.toml, defaults)
    Config(config_cmd::ConfigArgs),
    /// Create, list and revoke API tokens, straight on the store (--data-dir/--database)
    Tokens(tokens::TokensArgs),
    #[command(flatten)]
    Client(client_cmds::ClientCommand),
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The file watcher of script jobs reports routine trouble (a watched folder removed)
        // at INFO; it is not news.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,notify=warn"));
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

/// Exits with status 2 (a usage error) for a configuration file that cannot be used.
fn config_error(error: config::ConfigError) -> ! {
    eprintln!("error: {error}");
    std::process::exit(2)
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The file's values become clap's defaults, so flags and HINTER_* variables beat them.
    let config_path = config::locate(&argv);
    let file = config_path.as_ref().map(|(path, named)| {
        config::ConfigFile::read(path, *named).unwrap_or_else(|e| config_error(e))
    });
    let mut layered =
        config::Layered::new(Cli::command(), file).unwrap_or_else(|e| config_error(e));
    let matches = layered
        .command
        .try_get_matches_from_mut(&argv)
        .unwrap_or_else(|e| e.exit());
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let config_flag = cli
        .config
        .as_deref()
        .filter(|_| matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine));
    if let Err(e) = config::check_config_flag(
        config_flag,
        config_path.as_ref().map(|(path, _)| path.as_path()),
    ) {
        config_error(e);
    }
    // The worker's mode depends on where its flags came from (command line, environment,
    // the file's [worker] section or its top level).
    let worker_mode = match (&cli.command, matches.subcommand_matches("worker")) {
        (Command::Worker(args), Some(sub)) => {
            let path = ["worker".to_string()];
            match args.mode(sub, |id| layered.file_origin(&path, id)) {
                Ok(mode) => Some(mode),
                Err(message) => worker_usage_error(message),
            }
        }
        _ => None,
    };
    if let (Command::Worker(args), Some(sub)) =
        (&mut cli.command, matches.subcommand_matches("worker"))
    {
        let path = ["worker".to_string()];
        args.queues_given = sub.value_source("queues")
            != Some(clap::parser::ValueSource::DefaultValue)
            || layered.file_origin(&path, "queues").is_some();
    }
    if let Command::Config(args) = &cli.command {
        return match &args.command {
            config_cmd::ConfigCommand::Show(show) => config_cmd::show(show, &layered),
        };
    }
    let declared = layered
        .tokens()
        .iter()
        .map(config::FileToken::to_new_token)
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| config_error(e));
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
            Command::Serve(mut args) => {
                args.declared_tokens = declared;
                serve::serve(args).await
            }
            Command::Bench(args) => bench::bench(args).await,
            Command::Migrate(args) => args.migrate().await.map(|(version, place)| {
                println!("schema version {version}: {place}");
            }),
            Command::Config(_) => Ok(()),
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
