//! `hinter tokens create|list|revoke`: API tokens, straight on the store (`--data-dir` /
//! `--database`, like `serve` and `migrate`), so the first admin token needs no server and no
//! token. Each change is recorded in the audit record as made by `cli`.
//!
//! Exit codes follow the client commands' ([`crate::client_cmds::exit`]): 2 bad input (an
//! unknown scope, a bad name), 3 no such token, 4 the name is taken, 69 the store cannot be
//! used.

use crate::client_cmds::exit;
use crate::serve::StoreArgs;
use hinter_core::access::{generate_secret, NewToken, Scope, TokenInfo, ACTOR_CLI};
use hinter_core::StoreError;
use std::io::Write;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct TokensArgs {
    #[command(subcommand)]
    command: TokensCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokensCommand {
    /// Make a token and print it (alone on the last line); it is never shown again
    Create(CreateArgs),
    /// List the tokens (names, scopes, queues; never secrets)
    List(ListArgs),
    /// Delete a token; servers refuse it within about a second
    Revoke(RevokeArgs),
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    /// The token's name, shown in the audit record: letters, digits, `-`, `_`, `.`, `:`
    name: String,
    /// What it may do, comma-separated: enqueue, read, work, admin (admin implies all)
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_scope)]
    scope: Vec<Scope>,
    /// Only these queues (repeat the flag for several); default: every queue
    #[arg(long = "queue", value_name = "QUEUE")]
    queues: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
struct RevokeArgs {
    /// The token's name
    name: String,
    #[command(flatten)]
    store: StoreArgs,
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.trim().parse()
}

/// Runs a `tokens` command; reports its error on stderr and answers the exit code.
pub async fn run(args: TokensArgs) -> ExitCode {
    let result = match args.command {
        TokensCommand::Create(args) => create(args).await,
        TokensCommand::List(args) => list(args).await,
        TokensCommand::Revoke(args) => revoke(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

type Failed = (u8, String);

fn store_failure(e: StoreError) -> Failed {
    let code = match &e {
        StoreError::Invalid(_) => exit::USAGE,
        StoreError::Conflict(_) => exit::CONFLICT,
        StoreError::Unknown(_) => exit::NOT_FOUND,
        _ => exit::UNAVAILABLE,
    };
    (code, e.to_string())
}

async fn open(store: &StoreArgs) -> Result<std::sync::Arc<dyn hinter_core::Backend>, Failed> {
    store
        .open()
        .await
        .map_err(|e| (exit::UNAVAILABLE, format!("{e:#}")))
}

fn out(text: &str) -> Result<(), Failed> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| (exit::IO, format!("cannot write to standard output: {e}")))
}

fn describe(scopes: &[Scope], queues: Option<&[String]>) -> (String, String) {
    let scopes = scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let queues = match queues {
        None => "*".to_string(),
        Some(q) => q.join(","),
    };
    (scopes, queues)
}

async fn create(args: CreateArgs) -> Result<(), Failed> {
    let mut scopes = args.scope;
    scopes.sort();
    scopes.dedup();
    let queues = (!args.queues.is_empty()).then_some(args.queues);
    let (secret, hash) = generate_secret();
    let token = NewToken {
        name: args.name,
        hash,
        scopes,
        queues,
    };
    // Checked before the store is opened: a typo creates no data dir.
    token
        .check()
        .map_err(|e| (exit::USAGE, format!("{}: {}", e.field, e.message)))?;
    let store = open(&args.store).await?;
    let created = store
        .token_create(token, ACTOR_CLI, chrono::Utc::now())
        .await
        .map_err(store_failure)?;
    let _ = store.close().await;
    let (scopes, queues) = describe(&created.scopes, created.queues.as_deref());
    out(&format!(
        "created token {:?} (scopes {scopes}; queues {queues}) in {}\n\
         it is shown once, below; send it as Authorization: Bearer … (hinter: --token or HINTER_TOKEN)\n\
         {secret}\n",
        created.name,
        args.store.describe()
    ))
}

#[derive(serde::Serialize)]
struct Listed<'a> {
    tokens: &'a [TokenInfo],
}

async fn list(args: ListArgs) -> Result<(), Failed> {
    let store = open(&args.store).await?;
    let tokens = store.token_list().await.map_err(store_failure)?;
    let _ = store.close().await;
    if args.json {
        let text = serde_json::to_string_pretty(&Listed { tokens: &tokens })
            .map_err(|e| (exit::SOFTWARE, format!("cannot print JSON: {e}")))?;
        return out(&format!("{text}\n"));
    }
    if tokens.is_empty() {
        return out(
            "no tokens: the API is open on loopback only (hinter tokens create NAME --scope …)\n",
        );
    }
    let rows: Vec<[String; 4]> = tokens
        .iter()
        .map(|t| {
            let (scopes, queues) = describe(&t.scopes, t.queues.as_deref());
            [
                t.name.clone(),
                scopes,
                queues,
                t.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "SCOPES", "QUEUES", "CREATED"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        text.push_str(line.trim_end());
        text.push('\n');
    }
    out(&text)
}

async fn revoke(args: RevokeArgs) -> Result<(), Failed> {
    let store = open(&args.store).await?;
    let revoked = store
        .token_revoke(&args.name, ACTOR_CLI, chrono::Utc::now())
        .await
        .map_err(store_failure)?;
    let _ = store.close().await;
    out(&format!(
        "revoked token {:?}; servers refuse it within about a second\n",
        revoked.name
    ))
}
