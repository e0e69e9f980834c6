//! `hinter.toml`: every setting a flag or `HINTER_*` variable has, in a file
//! (docs/configuration.md).
//!
//! The file is one more layer of clap's own: each value found in it becomes the default value
//! of its argument in the [`clap::Command`] before the command line is parsed. So clap itself
//! applies the precedence flag > environment > file > built-in default, and file values go
//! through the same value parsers as flags. No key is listed here: the keys are derived from
//! the command definition (every long option with a `HINTER_*` variable, and every option of
//! the long-running commands `serve` and `worker`), so a flag added later is a file key at
//! once, with its flag's checks.
//!
//! Shape: top-level keys apply to every command that has the setting, as an environment
//! variable does; a `[COMMAND]` section (`[serve]`, `[worker]`, …) applies to that command
//! and its subcommands, and beats the top level. `[[tokens]]` declares API tokens
//! ([`FileToken`]).

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, Command};
use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

/// The file read when neither `--config` nor `HINTER_CONFIG` names one (if it exists).
pub const DEFAULT_PATH: &str = "hinter.toml";
/// The environment variable naming the file.
pub const CONFIG_ENV: &str = "HINTER_CONFIG";
/// The id and long name of the `--config` flag (not itself a file key).
pub const CONFIG_ARG: &str = "config";
/// Commands each option of which is a setting. Elsewhere (client commands, admin commands)
/// only options with a `HINTER_*` variable are: `enqueue --delay` is a choice per call.
const SERVICE_COMMANDS: [&str; 2] = ["serve", "worker"];
/// The top-level key of the token declarations.
const TOKENS_KEY: &str = "tokens";
/// The scopes a token may hold (issue 8; PRODUCT.md section 7).
pub const SCOPES: [&str; 4] = ["enqueue", "read", "work", "admin"];

/// A configuration file that cannot be used: what and where, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where a file value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileOrigin {
    /// The command's own `[COMMAND]` section.
    Section,
    /// A top-level key, shared by every command with the setting.
    TopLevel,
}

/// A token declared in `[[tokens]]`: its secret is never in the file, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileToken {
    pub name: String,
    /// Some of [`SCOPES`], at least one, each once.
    pub scopes: Vec<String>,
    /// The queues the token is limited to; empty: all queues.
    pub queues: Vec<String>,
    /// SHA-256 of the token's secret.
    pub hash: [u8; 32],
}

impl FileToken {
    /// The token as the server checks it; a name or queue the store would refuse is an error
    /// naming the token.
    pub fn to_new_token(&self) -> Result<hinter_core::access::NewToken, ConfigError> {
        let bad = |what: String| ConfigError(format!("[[tokens]] {:?}: {what}", self.name));
        let scopes = self
            .scopes
            .iter()
            .map(|s| s.parse().map_err(bad))
            .collect::<Result<Vec<_>, _>>()?;
        let token = hinter_core::access::NewToken {
            name: self.name.clone(),
            hash: self.hash.iter().map(|b| format!("{b:02x}")).collect(),
            scopes,
            queues: (!self.queues.is_empty()).then(|| self.queues.clone()),
        };
        token.check().map_err(|e| bad(e.to_string()))?;
        Ok(token)
    }
}

/// A parsed `hinter.toml`.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The path as it was given (shown in messages).
    pub path: PathBuf,
    table: toml::Table,
    pub tokens: Vec<FileToken>,
}

impl ConfigFile {
    /// Reads and parses `path`; the keys are checked by [`Layered::new`].
    pub fn read(path: &Path, named: Named) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let by = match named {
                Named::Flag => " (named by --config)",
                Named::Env => " (named by HINTER_CONFIG)",
                Named::Default => "",
            };
            ConfigError(match e.kind() {
                std::io::ErrorKind::NotFound => format!("{}: no such file{by}", path.display()),
                _ => format!("{}: cannot read it{by}: {e}", path.display()),
            })
        })?;
        ConfigFile::parse(path, &text)
    }

    /// Parses `text` as the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        let tokens = match table.get(TOKENS_KEY) {
            Some(value) => parse_tokens(path, value)?,
            None => Vec::new(),
        };
        Ok(ConfigFile {
            path: path.to_path_buf(),
            table,
            tokens,
        })
    }

    fn section(&self, name: &str) -> Option<&toml::Table> {
        self.table.get(name).and_then(toml::Value::as_table)
    }
}

/// How the file was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Flag,
    Env,
    /// `./hinter.toml`, which existed.
    Default,
}

/// The file to read for this command line, and how it was named: `--config PATH`, else
/// `HINTER_CONFIG`, else `./hinter.toml` if it exists. A named file must exist; the default
/// one may not.
///
/// Read before clap parses (the file shapes the parser); the same flag is declared to clap,
/// which checks it agrees ([`check_config_flag`]).
pub fn locate(argv: &[OsString]) -> Option<(PathBuf, Named)> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == "--config" {
            return args.next().map(|p| (PathBuf::from(p), Named::Flag));
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some((PathBuf::from(path), Named::Flag));
        }
    }
    if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), Named::Env));
    }
    Path::new(DEFAULT_PATH)
        .is_file()
        .then(|| (PathBuf::from(DEFAULT_PATH), Named::Default))
}

/// Checks that clap read the same `--config` flag (`parsed`, when given on the command line)
/// as [`locate`] did; they differ only when the flag's text is the value of another option.
pub fn check_config_flag(parsed: Option<&Path>, read: Option<&Path>) -> Result<(), ConfigError> {
    match parsed {
        Some(parsed) if Some(parsed) != read => Err(ConfigError(format!(
            "--config {}: could not be read ahead of the other flags; put it first, right \
             after `hinter`",
            parsed.display()
        ))),
        _ => Ok(()),
    }
}

/// One option of one (sub)command that a file value may set.
struct Setting<'a> {
    /// Subcommand names from the top, e.g. `["jobs", "list"]`; empty for `hinter` itself.
    path: Vec<String>,
    arg: &'a Arg,
    key: String,
}

impl Setting<'_> {
    /// The top-level subcommand, whose `[section]` applies.
    fn section(&self) -> Option<&str> {
        self.path.first().map(String::as_str)
    }
}

/// The file key of an option: its long name with `_` for `-`.
pub fn key_of(arg: &Arg) -> Option<String> {
    arg.get_long().map(|long| long.replace('-', "_"))
}

/// Whether `arg`, of a command under the top-level `section`, is set by a file key.
fn is_setting(arg: &Arg, section: Option<&str>) -> bool {
    if arg.is_positional() || arg.get_id() == CONFIG_ARG || arg.get_long().is_none() {
        return false;
    }
    let takes_setting = matches!(
        arg.get_action(),
        ArgAction::Set | ArgAction::Append | ArgAction::SetTrue | ArgAction::SetFalse
    );
    takes_setting
        && (arg.get_env().is_some() || section.is_some_and(|s| SERVICE_COMMANDS.contains(&s)))
}

/// Every setting of `command` (built) and its subcommands, depth first.
fn settings(command: &Command) -> Vec<Setting<'_>> {
    fn walk<'a>(command: &'a Command, path: Vec<String>, out: &mut Vec<Setting<'a>>) {
        let section = path.first().map(String::as_str);
        for arg in command.get_arguments() {
            if is_setting(arg, section) {
                if let Some(key) = key_of(arg) {
                    out.push(Setting {
                        path: path.clone(),
                        arg,
                        key,
                    });
                }
            }
        }
        for sub in command.get_subcommands() {
            let mut sub_path = path.clone();
            sub_path.push(sub.get_name().to_string());
            walk(sub, sub_path, out);
        }
    }
    let mut out = Vec::new();
    walk(command, Vec::new(), &mut out);
    out
}

/// The settings of the (sub)command at `path` of a built command, in definition order.
pub fn settings_of<'a>(command: &'a Command, path: &[String]) -> Vec<&'a Arg> {
    let section = path.first().map(String::as_str);
    command
        .get_arguments()
        .filter(|arg| is_setting(arg, section))
        .collect()
}

/// The meaning a top-level key has: the environment variable of the same option in `serve`,
/// else `worker`, else the first command that has it. A top-level value sets an option only
/// where it means the same (so `database` never becomes `bench --database`, which is
/// `HINTER_BENCH_DATABASE_URL`, a different setting).
fn top_level_meanings<'a>(all: &[Setting<'a>]) -> HashMap<String, Option<&'a OsStr>> {
    let rank = |s: &Setting| match s.section() {
        Some("serve") => 0,
        Some("worker") => 1,
        _ => 2,
    };
    let mut ordered: Vec<&Setting> = all.iter().collect();
    ordered.sort_by_key(|s| rank(s));
    let mut meanings = HashMap::new();
    for setting in ordered {
        meanings
            .entry(setting.key.clone())
            .or_insert(setting.arg.get_env());
    }
    meanings
}

/// The command line parser with a file's values as defaults, and where each came from.
pub struct Layered {
    /// Built (global options copied into subcommands), file values set as defaults.
    pub command: Command,
    pub file: Option<ConfigFile>,
    origins: HashMap<(Vec<String>, String), FileOrigin>,
}

impl Layered {
    /// Lays `file` under `command`'s flags and environment variables, after checking every
    /// key and value of it.
    pub fn new(mut command: Command, file: Option<ConfigFile>) -> Result<Layered, ConfigError> {
        command.build();
        let mut origins = HashMap::new();
        let Some(config) = file else {
            return Ok(Layered {
                command,
                file: None,
                origins,
            });
        };
        let mut defaults: Vec<(Vec<String>, String, Vec<String>)> = Vec::new();
        {
            let all = settings(&command);
            check_keys(&config, &command, &all)?;
            let meanings = top_level_meanings(&all);
            for setting in &all {
                let section = setting.section();
                let (value, origin) = match (
                    section.and_then(|s| config.section(s)?.get(&setting.key)),
                    config.table.get(&setting.key),
                ) {
                    (Some(value), _) => (value, FileOrigin::Section),
                    (None, Some(value))
                        if meanings.get(&setting.key) == Some(&setting.arg.get_env()) =>
                    {
                        (value, FileOrigin::TopLevel)
                    }
                    _ => continue,
                };
                let place = Place {
                    file: &config.path,
                    section: match origin {
                        FileOrigin::Section => section,
                        FileOrigin::TopLevel => None,
                    },
                    key: &setting.key,
                };
                let raw = raw_values(setting.arg, value).map_err(|e| place.error(e))?;
                check_values(setting.arg, &raw).map_err(|e| place.error(e))?;
                origins.insert(
                    (setting.path.clone(), setting.arg.get_id().to_string()),
                    origin,
                );
                defaults.push((setting.path.clone(), setting.arg.get_id().to_string(), raw));
            }
        }
        for (path, id, raw) in defaults {
            let Some(target) = subcommand_mut(&mut command, &path) else {
                continue;
            };
            let owned = std::mem::take(target);
            *target = owned.mut_args(|arg| {
                if arg.get_id() != id.as_str() {
                    return arg;
                }
                // `--help` shows defaults: not a file's secrets or URLs (which may hold a
                // password).
                let hide = key_of(&arg).is_some_and(|key| is_secret_key(&key))
                    || arg.is_hide_env_values_set()
                    || raw.iter().any(|v| v.contains("://"));
                arg.default_values(raw.clone()).hide_default_value(hide)
            });
        }
        Ok(Layered {
            command,
            file: Some(config),
            origins,
        })
    }

    /// Where the file value of option `id` of the (sub)command at `path` came from, if the
    /// file set it.
    pub fn file_origin(&self, path: &[String], id: &str) -> Option<FileOrigin> {
        self.origins.get(&(path.to_vec(), id.to_string())).copied()
    }

    /// The file's path as given, if a file was read.
    pub fn file_path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }

    /// The tokens the file declares.
    pub fn tokens(&self) -> &[FileToken] {
        self.file.as_ref().map_or(&[], |f| f.tokens.as_slice())
    }
}

fn subcommand_mut<'a>(command: &'a mut Command, path: &[String]) -> Option<&'a mut Command> {
    let mut current = command;
    for name in path {
        current = current.find_subcommand_mut(name)?;
    }
    Some(current)
}

/// Unknown keys and sections are errors, with a suggestion when one is close.
fn check_keys(config: &ConfigFile, command: &Command, all: &[Setting]) -> Result<(), ConfigError> {
    let sections: BTreeSet<&str> = command.get_subcommands().map(Command::get_name).collect();
    let top_keys: BTreeSet<&str> = all.iter().map(|s| s.key.as_str()).collect();
    for (key, value) in &config.table {
        if key == TOKENS_KEY {
            continue;
        }
        if sections.contains(key.as_str()) {
            let Some(table) = value.as_table() else {
                return Err(Place::top(&config.path, key).error(format!(
                    "expected a section ([{key}]) of settings of `hinter {key}`, got {}",
                    type_name(value)
                )));
            };
            let keys: BTreeSet<&str> = all
                .iter()
                .filter(|s| s.section() == Some(key.as_str()))
                .map(|s| s.key.as_str())
                .collect();
            for inner in table.keys() {
                if !keys.contains(inner.as_str()) {
                    let place = Place {
                        file: &config.path,
                        section: Some(key),
                        key: inner,
                    };
                    return Err(place.error(unknown(inner, keys.iter().copied())));
                }
            }
        } else if !top_keys.contains(key.as_str()) {
            let candidates = top_keys
                .iter()
                .map(|k| k.to_string())
                .chain(sections.iter().map(|s| format!("[{s}]")));
            return Err(Place::top(&config.path, key).error(unknown(key, candidates)));
        }
    }
    Ok(())
}

/// `unknown key`, with the closest known key if one is close.
fn unknown<S: AsRef<str>>(key: &str, candidates: impl Iterator<Item = S>) -> String {
    let dashless = key.replace('-', "_");
    let mut best: Option<(f64, String)> = None;
    for candidate in candidates {
        let candidate = candidate.as_ref();
        let bare = candidate.trim_matches(['[', ']']);
        let score = if bare == dashless {
            1.0
        } else {
            strsim::jaro_winkler(&dashless, bare)
        };
        if score > 0.8 && best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, candidate.to_string()));
        }
    }
    match best {
        Some((_, candidate)) => format!("unknown key (did you mean {candidate}?)"),
        None => "unknown key".to_string(),
    }
}

/// Where a value is in the file, as messages name it: `hinter.toml: [serve] listen`.
struct Place<'a> {
    file: &'a Path,
    section: Option<&'a str>,
    key: &'a str,
}

impl<'a> Place<'a> {
    fn top(file: &'a Path, key: &'a str) -> Place<'a> {
        Place {
            file,
            section: None,
            key,
        }
    }

    fn error(&self, message: impl fmt::Display) -> ConfigError {
        match self.section {
            Some(section) => ConfigError(format!(
                "{}: [{section}] {}: {message}",
                self.file.display(),
                self.key
            )),
            None => ConfigError(format!("{}: {}: {message}", self.file.display(), self.key)),
        }
    }
}

fn type_name(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// The value as the command-line text clap would get for it; the TOML type must fit the
/// kind of option (a boolean for a flag, an array only for a repeatable option).
fn raw_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    let scalar = |v: &toml::Value| match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    };
    match arg.get_action() {
        ArgAction::SetTrue | ArgAction::SetFalse => match value {
            toml::Value::Boolean(b) => Ok(vec![b.to_string()]),
            other => Err(format!("expected true or false, got {}", type_name(other))),
        },
        ArgAction::Append => {
            let items = match value {
                toml::Value::Array(items) => items.iter().collect(),
                single => vec![single],
            };
            items
                .into_iter()
                .map(|item| {
                    scalar(item).ok_or_else(|| {
                        format!(
                            "expected a string or an array of strings, got {}",
                            type_name(item)
                        )
                    })
                })
                .collect()
        }
        _ => match value {
            toml::Value::Array(_) => Err("expected a single value, got an array".to_string()),
            other => scalar(other)
                .map(|s| vec![s])
                .ok_or_else(|| format!("expected a string or a number, got {}", type_name(other))),
        },
    }
}

/// Parses the values with the option's own value parser (the one its flag uses), in a
/// command of that one option; the message says what was expected.
fn check_values(arg: &Arg, raw: &[String]) -> Result<(), String> {
    if !matches!(arg.get_action(), ArgAction::Set | ArgAction::Append) {
        return Ok(());
    }
    let mut probe = Arg::new("value")
        .long("value")
        .action(arg.get_action().clone())
        .value_parser(arg.get_value_parser().clone())
        .allow_hyphen_values(true);
    if let Some(range) = arg.get_num_args() {
        probe = probe.num_args(range);
    }
    if let Some(delimiter) = arg.get_value_delimiter() {
        probe = probe.value_delimiter(delimiter);
    }
    let argv = raw.iter().map(|v| format!("--value={v}"));
    match Command::new("hinter.toml")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(probe)
        .try_get_matches_from(argv)
    {
        Ok(_) => Ok(()),
        Err(e) => Err(describe(&e, raw)),
    }
}

/// A value parser's complaint, without clap's framing (which names a flag, not a file key).
fn describe(error: &clap::Error, raw: &[String]) -> String {
    let got = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => raw.join(","),
    };
    let detail = match error.kind() {
        ErrorKind::InvalidValue => match error.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(valid)) if !valid.is_empty() => {
                let valid: Vec<String> = valid.iter().map(|v| format!("{v:?}")).collect();
                format!("expected one of {}", valid.join(", "))
            }
            _ => "expected a value".to_string(),
        },
        _ => match std::error::Error::source(error) {
            Some(source) => source.to_string(),
            None => error.kind().to_string(),
        },
    };
    if detail.contains(&got) {
        detail
    } else {
        format!("{detail}, got {got:?}")
    }
}

/// `hinter.toml: line 3, column 9: invalid TOML: …`.
fn syntax_error(path: &Path, text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            ConfigError(format!(
                "{}: line {line}, column {column}: invalid TOML: {message}",
                path.display()
            ))
        }
        None => ConfigError(format!("{}: invalid TOML: {message}", path.display())),
    }
}

/// Keys a plain secret might be given under; refused, so no secret sits in the file.
const SECRET_KEYS: [&str; 4] = ["secret", "token", "value", "plain"];

/// `[[tokens]]`: name, scopes, queues (optional), hash (SHA-256 of the secret, hex).
fn parse_tokens(path: &Path, value: &toml::Value) -> Result<Vec<FileToken>, ConfigError> {
    let top = |message: String| Place::top(path, TOKENS_KEY).error(message);
    let toml::Value::Array(items) = value else {
        return Err(top(format!(
            "expected an array of tables ([[tokens]]), got {}",
            type_name(value)
        )));
    };
    let mut tokens: Vec<FileToken> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field_key = |field: &str| format!("{TOKENS_KEY}[{i}].{field}");
        let error = |field: &str, message: String| {
            ConfigError(format!(
                "{}: {}: {message}",
                path.display(),
                field_key(field)
            ))
        };
        let Some(table) = item.as_table() else {
            return Err(ConfigError(format!(
                "{}: {TOKENS_KEY}[{i}]: expected a table ([[tokens]]), got {}",
                path.display(),
                type_name(item)
            )));
        };
        for key in table.keys() {
            if SECRET_KEYS.contains(&key.as_str()) {
                return Err(error(
                    key,
                    "a token's secret does not belong in the file: give its SHA-256 as `hash` \
                     (64 hex digits, e.g. from `printf %s \"$TOKEN\" | sha256sum`)"
                        .to_string(),
                ));
            }
            if !["name", "scopes", "queues", "hash"].contains(&key.as_str()) {
                return Err(error(
                    key,
                    unknown(key, ["name", "scopes", "queues", "hash"].into_iter()),
                ));
            }
        }
        let string = |field: &str| -> Result<String, ConfigError> {
            match table.get(field) {
                Some(toml::Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(error(
                    field,
                    format!("expected a string, got {}", type_name(other)),
                )),
                None => Err(error(field, "missing".to_string())),
            }
        };
        let strings = |field: &str| -> Result<Option<Vec<String>>, ConfigError> {
            let expected = |got: &toml::Value| {
                error(
                    field,
                    format!("expected an array of strings, got {}", type_name(got)),
                )
            };
            match table.get(field) {
                None => Ok(None),
                Some(toml::Value::Array(items)) => items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or_else(|| expected(v)))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(other) => Err(expected(other)),
            }
        };
        let name = string("name")?;
        hinter_core::definition::validate_name("name", &name)
            .map_err(|e| error("name", e.message))?;
        if tokens.iter().any(|t| t.name == name) {
            return Err(error(
                "name",
                format!("{name:?} is declared twice; token names are unique"),
            ));
        }
        let scopes = strings("scopes")?.unwrap_or_default();
        if scopes.is_empty() {
            return Err(error(
                "scopes",
                format!("expected at least one of {}", SCOPES.join(", ")),
            ));
        }
        let mut seen = Vec::new();
        for scope in scopes {
            if !SCOPES.contains(&scope.as_str()) {
                return Err(error(
                    "scopes",
                    format!("expected one of {}, got {scope:?}", SCOPES.join(", ")),
                ));
            }
            if !seen.contains(&scope) {
                seen.push(scope);
            }
        }
        let queues = strings("queues")?.unwrap_or_default();
        for (q, queue) in queues.iter().enumerate() {
            hinter_core::definition::validate_name("queue", queue)
                .map_err(|e| error(&format!("queues[{q}]"), e.message))?;
        }
        let hash_text = string("hash")?;
        let hash = parse_sha256(&hash_text).ok_or_else(|| {
            error(
                "hash",
                "expected the SHA-256 of the token's secret as 64 hex digits (e.g. from \
                 `printf %s \"$TOKEN\" | sha256sum`); the secret itself does not belong in \
                 the file"
                    .to_string(),
            )
        })?;
        tokens.push(FileToken {
            name,
            scopes: seen,
            queues,
            hash,
        });
    }
    Ok(tokens)
}

fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether a setting's value is shown as `***`: its name says it is a secret.
pub fn is_secret_key(key: &str) -> bool {
    ["token", "secret", "password", "key"]
        .iter()
        .any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("hinter")
            .arg(
                Arg::new("log_format")
                    .long("log-format")
                    .env("HINTER_LOG_FORMAT")
                    .default_value("text")
                    .value_parser(["text", "json"])
                    .global(true),
            )
            .subcommand(
                Command::new("serve")
                    .arg(
                        Arg::new("listen")
                            .long("listen")
                            .env("HINTER_LISTEN")
                            .default_value("127.0.0.1:7433"),
                    )
                    .arg(
                        Arg::new("max_job_bytes")
                            .long("max-job-bytes")
                            .value_parser(clap::value_parser!(u64).range(256..)),
                    )
                    .arg(
                        Arg::new("database")
                            .long("database")
                            .env("HINTER_DATABASE_URL"),
                    ),
            )
            .subcommand(
                Command::new("bench").arg(
                    Arg::new("database")
                        .long("database")
                        .env("HINTER_BENCH_DATABASE_URL"),
                ),
            )
            .subcommand(
                Command::new("enqueue")
                    .arg(Arg::new("delay").long("delay"))
                    .arg(Arg::new("server").long("server").env("HINTER_SERVER")),
            )
    }

    fn layered(text: &str) -> Result<Layered, ConfigError> {
        let file = ConfigFile::parse(Path::new("hinter.toml"), text)?;
        Layered::new(cli(), Some(file))
    }

    fn error(text: &str) -> String {
        match layered(text) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn file_values_become_defaults_and_sections_beat_the_top_level() {
        let mut layered = layered(
            "log_format = \"json\"\nlisten = \"0.0.0.0:1\"\n[serve]\nlisten = \"0.0.0.0:2\"\n",
        )
        .expect("valid");
        let matches = layered
            .command
            .try_get_matches_from_mut(["hinter", "serve"])
            .expect("parses");
        let serve = matches.subcommand_matches("serve").expect("serve");
        assert_eq!(
            serve.get_one::<String>("listen").map(String::as_str),
            Some("0.0.0.0:2")
        );
        assert_eq!(
            matches.get_one::<String>("log_format").map(String::as_str),
            Some("json")
        );
        let path = vec!["serve".to_string()];
        assert_eq!(
            layered.file_origin(&path, "listen"),
            Some(FileOrigin::Section)
        );
        assert_eq!(
            layered.file_origin(&path, "log_format"),
            Some(FileOrigin::TopLevel)
        );
        assert_eq!(layered.file_origin(&path, "database"), None);
    }

    #[test]
    fn top_level_keys_keep_their_meaning() {
        let mut layered = layered("database = \"postgres://h/db\"\n").expect("valid");
        let matches = layered
            .command
            .try_get_matches_from_mut(["hinter", "bench"])
            .expect("parses");
        let bench = matches.subcommand_matches("bench").expect("bench");
        assert_eq!(bench.get_one::<String>("database"), None);
        assert!(error("[bench]\ndelay = 1\n").contains("[bench] delay: unknown key"));
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        assert_eq!(
            error("[serve]\nlisten_addr = \"x\"\n"),
            "hinter.toml: [serve] listen_addr: unknown key (did you mean listen?)"
        );
        assert_eq!(
            error("max-job-bytes = 300\n"),
            "hinter.toml: max-job-bytes: unknown key (did you mean max_job_bytes?)"
        );
        assert_eq!(
            error("[srve]\nlisten = \"x\"\n"),
            "hinter.toml: srve: unknown key (did you mean [serve]?)"
        );
        // Options that are a choice per call are not settings.
        assert_eq!(
            error("[enqueue]\ndelay = \"1s\"\n"),
            "hinter.toml: [enqueue] delay: unknown key"
        );
    }

    #[test]
    fn values_go_through_the_flags_parsers() {
        assert_eq!(
            error("[serve]\nmax_job_bytes = \"big\"\n"),
            "hinter.toml: [serve] max_job_bytes: invalid digit found in string, got \"big\""
        );
        assert_eq!(
            error("log_format = \"xml\"\n"),
            "hinter.toml: log_format: expected one of \"text\", \"json\", got \"xml\""
        );
        assert_eq!(
            error("[serve]\nlisten = [\"a\"]\n"),
            "hinter.toml: [serve] listen: expected a single value, got an array"
        );
        assert_eq!(
            error("[serve]\nlisten = true\n"),
            "hinter.toml: [serve] listen: expected a string or a number, got a boolean"
        );
        assert_eq!(
            error("serve = 1\n"),
            "hinter.toml: serve: expected a section ([serve]) of settings of `hinter serve`, \
             got an integer"
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let e = ConfigFile::parse(Path::new("x/hinter.toml"), "a = 1\nlisten = \n")
            .expect_err("invalid");
        assert!(
            e.0.starts_with("x/hinter.toml: line 2, column 10: invalid TOML: "),
            "{e}"
        );
    }

    const HASH: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn tokens_are_declared_by_hash() {
        let file = ConfigFile::parse(
            Path::new("hinter.toml"),
            &format!(
                "[[tokens]]\nname = \"web\"\nscopes = [\"enqueue\", \"read\", \"enqueue\"]\n\
                 queues = [\"emails\"]\nhash = \"{HASH}\"\n"
            ),
        )
        .expect("valid");
        assert_eq!(file.tokens.len(), 1);
        assert_eq!(file.tokens[0].name, "web");
        assert_eq!(file.tokens[0].scopes, ["enqueue", "read"]);
        assert_eq!(file.tokens[0].queues, ["emails"]);
        assert_eq!(file.tokens[0].hash[0], 0x2c);
        assert_eq!(file.tokens[0].hash[31], 0xae);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let token = |body: &str| format!("[[tokens]]\n{body}\n");
        let e = |body: &str| error(&token(body));
        assert!(e(&format!(
            "name = \"a\"\nscopes = [\"read\"]\nsecret = \"s\"\nhash = \"{HASH}\""
        ))
        .starts_with("hinter.toml: tokens[0].secret: a token's secret does not belong"));
        assert!(e("name = \"a\"\nscopes = [\"read\"]\nhash = \"foo\"")
            .starts_with("hinter.toml: tokens[0].hash: expected the SHA-256"));
        assert_eq!(
            e(&format!(
                "name = \"a\"\nscopes = [\"rid\"]\nhash = \"{HASH}\""
            )),
            "hinter.toml: tokens[0].scopes: expected one of enqueue, read, work, admin, got \
             \"rid\""
        );
        assert_eq!(
            e(&format!("name = \"a\"\nhash = \"{HASH}\"")),
            "hinter.toml: tokens[0].scopes: expected at least one of enqueue, read, work, admin"
        );
        assert_eq!(
            e(&format!("scopes = [\"read\"]\nhash = \"{HASH}\"")),
            "hinter.toml: tokens[0].name: missing"
        );
        let twice = format!(
            "{}{}",
            token(&format!(
                "name = \"a\"\nscopes = [\"read\"]\nhash = \"{HASH}\""
            )),
            token(&format!(
                "name = \"a\"\nscopes = [\"work\"]\nhash = \"{HASH}\""
            ))
        );
        assert_eq!(
            error(&twice),
            "hinter.toml: tokens[1].name: \"a\" is declared twice; token names are unique"
        );
        assert_eq!(
            error("[tokens]\nname = \"a\"\n"),
            "hinter.toml: tokens: expected an array of tables ([[tokens]]), got a table"
        );
    }

    #[test]
    fn locate_reads_the_flag_before_the_environment() {
        let argv = |args: &[&str]| -> Vec<OsString> { args.iter().map(OsString::from).collect() };
        assert_eq!(
            locate(&argv(&["hinter", "serve", "--config", "a.toml"])),
            Some((PathBuf::from("a.toml"), Named::Flag))
        );
        assert_eq!(
            locate(&argv(&["hinter", "--config=b.toml", "serve"])),
            Some((PathBuf::from("b.toml"), Named::Flag))
        );
        // After `--` it is the worker's command's own argument.
        assert_ne!(
            locate(&argv(&[
                "hinter", "worker", "--", "cmd", "--config", "c.toml"
            ])),
            Some((PathBuf::from("c.toml"), Named::Flag))
        );
    }

    const DOCS: &str = include_str!("../../../docs/configuration.md");

    /// The example file of docs/configuration.md.
    fn documented_example() -> &'static str {
        let marker = "<!-- example: hinter.toml -->\n```toml\n";
        let start = DOCS.find(marker).expect("the example's marker") + marker.len();
        let len = DOCS[start..].find("```").expect("the example's end");
        &DOCS[start..start + len]
    }

    #[test]
    fn the_documented_example_loads() {
        use clap::CommandFactory;
        let file = ConfigFile::parse(Path::new("example.toml"), documented_example())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut layered =
            Layered::new(crate::Cli::command(), Some(file)).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = layered.tokens().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["web", "remote-workers"]);
        let matches = layered
            .command
            .try_get_matches_from_mut(["hinter", "worker", "--", "true"])
            .unwrap_or_else(|e| panic!("{e}"));
        let worker = matches.subcommand_matches("worker").expect("worker");
        let queues: Vec<&String> = worker
            .get_many::<String>("queues")
            .expect("queues")
            .collect();
        assert_eq!(queues, ["emails", "reports"]);
    }

    #[test]
    fn every_key_is_documented() {
        use clap::CommandFactory;
        let mut command = crate::Cli::command();
        command.build();
        let missing: BTreeSet<String> = settings(&command)
            .iter()
            .map(|s| s.key.clone())
            .filter(|key| !DOCS.contains(&format!("| `{key}` |")))
            .collect();
        assert!(
            missing.is_empty(),
            "keys missing from the tables of docs/configuration.md: {missing:?}"
        );
    }
}
