//! `cargo bench -p hinter-server --bench auth`: what a bearer token adds to a request — a
//! cached lookup, one SHA-256 and a constant-time comparison per known token — with 20
//! tokens in a real SQLite store (the cache is refreshed from it once a second).

use chrono::Utc;
use hinter_core::access::{generate_secret, NewToken, Scope, ACTOR_CLI};
use hinter_core::Store;
use hinter_server::auth::Authenticator;
use hinter_server::AuthConfig;
use hinter_sqlite::{SqliteOptions, SqliteStore};
use std::sync::Arc;
use std::time::Instant;

const TOKENS: usize = 20;
const ROUNDS: u32 = 200_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("bench.db"), SqliteOptions::default()).await?);
    let mut last = String::new();
    for i in 0..TOKENS {
        let (secret, hash) = generate_secret();
        let token = NewToken {
            name: format!("t{i}"),
            hash,
            scopes: vec![Scope::Read],
            queues: None,
        };
        store.token_create(token, ACTOR_CLI, Utc::now()).await?;
        last = secret;
    }
    let auth = Authenticator::new(store, AuthConfig::default());
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {last}").parse()?);
    auth.authenticate(&headers, Scope::Read)
        .await
        .map_err(|e| e.message)?;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        auth.authenticate(&headers, Scope::Read)
            .await
            .map_err(|e| e.message)?;
    }
    let took = started.elapsed();
    println!(
        "token check, {TOKENS} tokens: {:.2} µs per request ({} reads of the token list in {took:.1?})",
        took.as_secs_f64() * 1e6 / f64::from(ROUNDS),
        auth.reloads()
    );
    Ok(())
}
