//! Connection settings: parsing the URL (its TLS parameters: `tls.rs`), the schema's
//! `search_path`, and naming the database in messages without its password.

use crate::tls::{self, MakeRustlsConnect, TlsSettings};
use crate::PostgresOptions;
use hinter_core::StoreError;
use std::time::Duration;
use tokio_postgres::config::Host;

/// Longest schema name accepted, so the event channel name stays within PostgreSQL's 63 bytes.
const MAX_SCHEMA_LEN: usize = 48;

/// Quotes `name` as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Checks a schema name: lowercase letters, digits and `_`, not starting with a digit.
pub fn validate_schema(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= MAX_SCHEMA_LEN
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "invalid PostgreSQL schema name {schema:?}: use 1 to {MAX_SCHEMA_LEN} lowercase \
             letters, digits and underscores, not starting with a digit"
        )))
    }
}

/// The database a config points at, for messages: `user@host:port/db`, never the password.
pub fn describe_target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => format!("{}:{port}", path.display()),
            }
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "(no host)".to_string()
    } else {
        hosts.join(",")
    };
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config
        .get_dbname()
        .map(|d| format!("/{d}"))
        .unwrap_or_default();
    format!("postgres://{user}{hosts}{db}")
}

/// How to open connections to one database.
#[derive(Clone)]
pub struct Settings {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
    pub connector: MakeRustlsConnect,
    /// `user@host:port/db`, for messages.
    pub target: String,
}

impl Settings {
    /// Parses `url` (with its TLS parameters) and applies `options`.
    pub fn new(url: &str, options: &PostgresOptions) -> Result<Self, StoreError> {
        let (config, tls) = config(url, options)?;
        let connector = tls::connector(&tls)?;
        let target = describe_target(&config);
        Ok(Self {
            config,
            tls,
            connector,
            target,
        })
    }

    /// Opens one connection (its task spawned); a failure names the database, never the
    /// password, and says what to change when TLS was the reason.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.connector.clone())
            .await
            .map_err(|e| self.connect_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    pub fn connect_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let mut message = format!(
            "cannot connect to PostgreSQL at {}: {}",
            self.target,
            crate::ops::describe(e)
        );
        if let Some(hint) = tls::hint(e, &self.tls) {
            message.push_str(" (");
            message.push_str(&hint);
            message.push(')');
        }
        StoreError::Unavailable(message)
    }
}

/// Parses `url` and applies the options: the schema's `search_path` for every connection,
/// timeouts, keepalives and an application name when the URL sets none. `sslmode` and
/// `sslrootcert` are taken out first ([`tls::split`]).
pub fn config(
    url: &str,
    options: &PostgresOptions,
) -> Result<(tokio_postgres::Config, TlsSettings), StoreError> {
    let (url, tls) = tls::split(url)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        // The cause says which option is wrong ("unknown option `x`").
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        StoreError::Unavailable(format!("invalid PostgreSQL URL (postgres://…): {e}{cause}"))
    })?;
    config.ssl_mode(tls.mode.for_tokio_postgres());
    if let Some(schema) = &options.schema {
        validate_schema(schema)?;
        let search_path = format!("-c search_path={schema}");
        let combined = match config.get_options() {
            Some(existing) if !existing.trim().is_empty() => format!("{existing} {search_path}"),
            _ => search_path,
        };
        config.options(&combined);
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("hinter");
    }
    if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        config.keepalives_idle(Duration::from_secs(30));
    }
    Ok((config, tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        for ok in ["hinter", "t_1", "_x", &"a".repeat(48)] {
            assert!(validate_schema(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hinter", "1abc", "a-b", "a b", "a\"b", &"a".repeat(49)] {
            assert!(validate_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn target_hides_the_password() {
        let options = PostgresOptions::default();
        let (config, _) =
            config("postgres://alice:s3cret@db.example:6543/jobs", &options).expect("a valid URL");
        let target = describe_target(&config);
        assert_eq!(target, "postgres://alice@db.example:6543/jobs");
        assert!(!target.contains("s3cret"));
        assert_eq!(config.get_options(), Some("-c search_path=hinter"));
        let err = super::config("postgres://a:b@h/db?bogus=1", &options).expect_err("bad URL");
        assert!(!err.to_string().contains(":b@"), "{err}");
    }
}
