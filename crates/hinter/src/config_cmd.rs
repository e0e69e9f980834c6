//! `hinter config show`: the settings a command would run with, each with where it came from
//! (flag, environment, `hinter.toml`, built-in default), secrets hidden.
//!
//! It parses the command line it is given (`serve` by default) with the very parser that
//! command would use ([`Layered::command`]), so what it shows is what that command gets.

use crate::config::{self, FileOrigin, Layered};
use clap::parser::ValueSource;
use clap::{ArgAction, Command};
use serde_json::{json, Map, Value};
use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

/// `hinter config …`
#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the settings a command would run with (default: serve) and where each comes
    /// from: flag, env, file (hinter.toml) or default. Secrets are shown as ***
    Show(ShowArgs),
}

/// `hinter config show [--json] [COMMAND [FLAGS...]]`
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hinter config show                       # serve, as `hinter serve` would run now
  hinter config show --json serve --listen 0.0.0.0:7433
  hinter config show worker --data-dir /srv/hinter
Options of `config show` itself (--json, --config) come before COMMAND.")]
pub struct ShowArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,

    /// The command whose settings to show, with the flags it would be given [default: serve]
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..
    )]
    pub command: Vec<OsString>,
}

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Flag,
    Env,
    File(FileOrigin),
    Default,
    Unset,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File(_) => "file",
            Source::Default => "default",
            Source::Unset => "unset",
        }
    }
}

/// One setting as shown.
struct Entry {
    key: String,
    flag: String,
    env: Option<String>,
    /// Secrets already hidden; `None`: not set.
    values: Option<Vec<String>>,
    is_flag: bool,
    is_list: bool,
    source: Source,
}

/// Runs `hinter config show`; usage errors of the shown command exit with status 2.
pub fn show(args: &ShowArgs, layered: &Layered) -> ExitCode {
    let mut command = relaxed(layered.command.clone());
    let target = if args.command.is_empty() {
        vec![OsString::from("serve")]
    } else {
        args.command.clone()
    };
    let argv = std::iter::once(OsString::from("hinter")).chain(target);
    let matches = match command.try_get_matches_from_mut(argv) {
        Ok(matches) => matches,
        Err(e) => e.exit(),
    };
    let mut path: Vec<String> = Vec::new();
    let mut leaf = &matches;
    let mut shown = &command;
    while let Some((name, sub)) = leaf.subcommand() {
        path.push(name.to_string());
        leaf = sub;
        match shown.find_subcommand(name) {
            Some(next) => shown = next,
            None => break,
        }
    }
    let entries: Vec<Entry> = config::settings_of(shown, &path)
        .into_iter()
        .filter_map(|arg| {
            let id = arg.get_id().as_str();
            let key = config::key_of(arg)?;
            let source = match leaf.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                Some(ValueSource::DefaultValue) => match layered.file_origin(&path, id) {
                    Some(origin) => Source::File(origin),
                    None => Source::Default,
                },
                _ => Source::Unset,
            };
            let values = leaf.try_get_raw(id).ok().flatten().map(|raw| {
                raw.map(|v| hide(&key, &v.to_string_lossy()))
                    .collect::<Vec<_>>()
            });
            Some(Entry {
                flag: format!("--{}", arg.get_long().unwrap_or(id)),
                env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                values: if source == Source::Unset {
                    None
                } else {
                    values
                },
                is_flag: matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse),
                is_list: matches!(arg.get_action(), ArgAction::Append),
                source,
                key,
            })
        })
        .collect();
    let title = if path.is_empty() {
        "hinter".to_string()
    } else {
        format!("hinter {}", path.join(" "))
    };
    let printed = if args.json {
        print_json(&title, &entries, layered)
    } else {
        print_table(&title, &entries, layered)
    };
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the output: {e}");
            ExitCode::from(crate::client_cmds::exit::IO)
        }
    }
}

/// The command with nothing required, so a command's settings can be shown without its
/// arguments (`worker` without `-- COMMAND`, `jobs` without a subcommand).
fn relaxed(command: Command) -> Command {
    let mut command = command
        .subcommand_required(false)
        .arg_required_else_help(false)
        .mut_args(|arg| {
            arg.required(false)
                .required_unless_present(clap::builder::Resettable::<clap::Id>::Reset)
        });
    for sub in command.get_subcommands_mut() {
        *sub = relaxed(std::mem::take(sub));
    }
    command
}

/// A value as it may be shown: secrets as `***`, passwords in URLs hidden.
fn hide(key: &str, value: &str) -> String {
    if config::is_secret_key(key) {
        "***".to_string()
    } else if value.contains("://") {
        crate::serve::redact(value)
    } else {
        value.to_string()
    }
}

fn origin_text(entry: &Entry, section: Option<&str>) -> String {
    match (entry.source, section) {
        (Source::Flag, _) => format!("flag {}", entry.flag),
        (Source::Env, _) => format!("env {}", entry.env.as_deref().unwrap_or("?")),
        (Source::File(FileOrigin::Section), Some(section)) => format!("file [{section}]"),
        (Source::File(_), _) => "file".to_string(),
        (source, _) => source.name().to_string(),
    }
}

fn print_table(title: &str, entries: &[Entry], layered: &Layered) -> std::io::Result<()> {
    let section = title.split(' ').nth(1);
    let mut out = std::io::stdout().lock();
    match layered.file_path() {
        Some(path) => writeln!(out, "{title}: settings (config file: {})", path.display())?,
        None => writeln!(out, "{title}: settings (no config file)")?,
    }
    let rows: Vec<[String; 3]> = entries
        .iter()
        .map(|entry| {
            let value = match &entry.values {
                Some(values) => values.join(","),
                None => "-".to_string(),
            };
            [entry.key.clone(), value, origin_text(entry, section)]
        })
        .collect();
    let header = ["KEY".to_string(), "VALUE".to_string(), "SOURCE".to_string()];
    let width = |i: usize| {
        rows.iter()
            .chain(std::iter::once(&header))
            .map(|r| r[i].chars().count())
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0), width(1));
    for row in std::iter::once(&header).chain(rows.iter()) {
        writeln!(out, "{:w0$}  {:w1$}  {}", row[0], row[1], row[2])?;
    }
    let tokens = layered.tokens();
    if !tokens.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "tokens declared in the config file (secrets never shown):"
        )?;
        let rows: Vec<[String; 3]> = tokens
            .iter()
            .map(|t| {
                let queues = if t.queues.is_empty() {
                    "(all)".to_string()
                } else {
                    t.queues.join(",")
                };
                [t.name.clone(), t.scopes.join(","), queues]
            })
            .collect();
        let header = [
            "NAME".to_string(),
            "SCOPES".to_string(),
            "QUEUES".to_string(),
        ];
        let width = |i: usize| {
            rows.iter()
                .chain(std::iter::once(&header))
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        };
        let (w0, w1) = (width(0), width(1));
        for row in std::iter::once(&header).chain(rows.iter()) {
            writeln!(out, "{:w0$}  {:w1$}  {}", row[0], row[1], row[2])?;
        }
    }
    out.flush()
}

fn print_json(title: &str, entries: &[Entry], layered: &Layered) -> std::io::Result<()> {
    let section = title.split(' ').nth(1);
    let mut settings = Map::new();
    for entry in entries {
        let value = match &entry.values {
            None => Value::Null,
            Some(values) if entry.is_list => json!(values),
            Some(values) => {
                let text = values.join(",");
                match (entry.is_flag, text.as_str()) {
                    (true, "true") => Value::Bool(true),
                    (true, "false") => Value::Bool(false),
                    _ => Value::String(text),
                }
            }
        };
        let mut item = Map::new();
        item.insert("value".into(), value);
        item.insert("source".into(), entry.source.name().into());
        item.insert("flag".into(), entry.flag.clone().into());
        item.insert("env".into(), json!(entry.env));
        if let Source::File(origin) = entry.source {
            let file_key = match (origin, section) {
                (FileOrigin::Section, Some(section)) => format!("[{section}] {}", entry.key),
                _ => entry.key.clone(),
            };
            item.insert("file_key".into(), file_key.into());
        }
        settings.insert(entry.key.clone(), Value::Object(item));
    }
    let tokens: Vec<Value> = layered
        .tokens()
        .iter()
        .map(|t| json!({"name": t.name, "scopes": t.scopes, "queues": t.queues}))
        .collect();
    let document = json!({
        "command": title,
        "config_file": layered.file_path().map(|p| p.display().to_string()),
        "settings": settings,
        "tokens": tokens,
    });
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &document)?;
    writeln!(out)?;
    out.flush()
}
