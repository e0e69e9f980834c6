//! `hinter jobs logs ID [--follow]` and `hinter definitions list`.

use super::{exit, note, out, out_json, ClientOpts, CmdResult, Failure, Table};
use chrono::SecondsFormat;
use clap::{Args, Subcommand};
use hinter_client::{Client, JobState};
use hinter_core::LogLine;
use std::time::Duration;
use uuid::Uuid;

/// How often `jobs logs --follow` asks for new lines while the job runs.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Lines asked for per request.
const PAGE: u32 = 1000;

/// `hinter jobs logs ID [--attempt N] [--after ID] [--follow]`
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[arg(value_name = "ID")]
    pub id: Uuid,

    /// Only the lines of this attempt (1, 2, …)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub attempt: Option<u32>,

    /// Only lines after this line id (the `id` of a line printed with --json)
    #[arg(long, value_name = "LINE_ID", default_value_t = 0)]
    pub after: i64,

    /// Keep printing new lines until the job has finished (stop with Ctrl-C)
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `hinter jobs logs`: every line so far (a page at a time); with `--follow`, then the new
/// ones until the job is finished. `--json`: without --follow the API's answer with every
/// line; with it, one JSON object per line as they come.
pub async fn logs(client: &Client, args: LogsArgs, json: bool) -> CmdResult {
    let mut after = args.after;
    let mut collected: Vec<LogLine> = Vec::new();
    loop {
        // Read the job's state before its lines: a job seen finished has no lines to come
        // beyond those read next.
        let finished = if args.follow {
            client.get_job(args.id, None).await?.state.is_finished()
        } else {
            true
        };
        let page = client
            .job_logs(args.id, args.attempt, after, Some(PAGE))
            .await?;
        let full = page.lines.len() as u32 >= PAGE;
        after = page.next_after;
        if args.follow || !json {
            for line in &page.lines {
                if json {
                    let text = serde_json::to_string(line).map_err(|e| {
                        Failure::new(exit::SOFTWARE, format!("cannot print JSON: {e}"))
                    })?;
                    out(&format!("{text}\n"))?;
                } else {
                    out(&format_line(line))?;
                }
            }
        } else {
            collected.extend(page.lines);
        }
        if full {
            continue;
        }
        if finished {
            break;
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
    if json && !args.follow {
        out_json(&hinter_core::output::LogPage {
            job_id: args.id,
            lines: collected,
            next_after: after,
        })?;
    }
    Ok(exit::OK)
}

/// `2026-11-29T18:00:00.123Z #1 INFO  text`
fn format_line(line: &LogLine) -> String {
    format!(
        "{} #{} {:<5} {}\n",
        line.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        line.attempt,
        line.level.to_uppercase(),
        line.line
    )
}

/// `hinter definitions …`
#[derive(Debug, Args)]
pub struct DefinitionsArgs {
    #[command(flatten)]
    pub opts: ClientOpts,
    #[command(subcommand)]
    pub command: DefinitionsCommand,
}

#[derive(Debug, Subcommand)]
pub enum DefinitionsCommand {
    /// List the job definitions the server has loaded (script folders with their errors)
    List,
}

/// `hinter definitions list [--json]`: exit 0 even when some folders have errors (they are
/// listed); the errors are also printed to stderr.
pub async fn definitions(args: DefinitionsArgs) -> CmdResult {
    let client = args.opts.client()?;
    match args.command {
        DefinitionsCommand::List => {
            let definitions = client.definitions().await?;
            if args.opts.json {
                out_json(&hinter_core::output::DefinitionList { definitions })?;
                return Ok(exit::OK);
            }
            let mut table = Table::new(&["NAME", "KIND", "QUEUE", "RUNS", "STATUS"]);
            for d in &definitions {
                let runs = match (&d.file, &d.interpreter) {
                    (Some(file), Some(interpreter)) if !interpreter.is_empty() => {
                        format!("{} {file}", interpreter.join(" "))
                    }
                    (Some(file), _) => file.clone(),
                    (None, _) => "-".into(),
                };
                let queue = d.settings["queue"].as_str().unwrap_or("-").to_string();
                let status = if d.error.is_some() {
                    "error".to_string()
                } else if d.kind == "continuous" {
                    continuous_state(d.status.as_ref())
                } else {
                    "ok".to_string()
                };
                table.row(vec![d.name.clone(), d.kind.clone(), queue, runs, status]);
            }
            if table.is_empty() {
                note("no job definitions loaded");
            } else {
                out(&table.render())?;
            }
            for d in &definitions {
                if let Some(error) = &d.error {
                    note(&format!("{} ({}): {error}", d.name, d.kind));
                }
            }
        }
    }
    Ok(exit::OK)
}

/// A continuous job's status on the server: `running (pid 4242)`, `backoff (3 restarts)`,
/// `waiting-for-singleton`.
fn continuous_state(status: Option<&serde_json::Value>) -> String {
    let Some(status) = status else {
        return "ok".into();
    };
    let state = status["state"].as_str().unwrap_or("?");
    let restarts = status["restarts"].as_u64().unwrap_or(0);
    let mut details = Vec::new();
    if let Some(pid) = status["pid"].as_u64() {
        details.push(format!("pid {pid}"));
    }
    if restarts > 0 {
        details.push(format!(
            "{restarts} restart{}",
            if restarts == 1 { "" } else { "s" }
        ));
    }
    if details.is_empty() {
        state.to_string()
    } else {
        format!("{state} ({})", details.join(", "))
    }
}

/// A job's state for `jobs show`: its progress, if any.
pub fn progress_line(job: &hinter_client::Job) -> Option<String> {
    let progress = job.progress.as_ref()?;
    let mut line = format!("{}%", progress.percent);
    if let Some(message) = &progress.message {
        line.push(' ');
        line.push_str(message);
    }
    if job.state == JobState::Running {
        line.push_str(&format!(
            " (at {})",
            progress.at.to_rfc3339_opts(SecondsFormat::Secs, true)
        ));
    }
    Some(line)
}
