//! SQLite: API tokens and the audit record (`tokens`, `audit`; migration 8).

use crate::ops::{db_err, micros, Result};
use chrono::{DateTime, Utc};
use hinter_core::access::{AuditEntry, NewAudit, NewToken, Scope, TokenInfo};
use hinter_core::StoreError;
use rusqlite::{params, Connection, OptionalExtension, Row};

fn time(us: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {us} out of range")))
}

fn corrupt(what: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

const TOKEN_COLUMNS: &str = "name, hash, scopes, queues, created_at";

fn token_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<(String, String, String, Option<String>, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn decode_token(
    (name, hash, scopes, queues, created_at): (String, String, String, Option<String>, i64),
) -> Result<TokenInfo> {
    let scopes: Vec<Scope> =
        serde_json::from_str(&scopes).map_err(|e| corrupt("token scopes", e))?;
    let queues: Option<Vec<String>> = queues
        .map(|q| serde_json::from_str(&q))
        .transpose()
        .map_err(|e| corrupt("token queues", e))?;
    Ok(TokenInfo {
        name,
        hash,
        scopes,
        queues,
        created_at: time(created_at)?,
    })
}

fn token_get(conn: &Connection, name: &str) -> Result<Option<TokenInfo>> {
    conn.prepare_cached(&format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE name = ?1"
    ))
    .map_err(db_err)?
    .query_row([name], token_from_row)
    .optional()
    .map_err(db_err)?
    .map(decode_token)
    .transpose()
}

pub fn token_create(conn: &Connection, token: &NewToken, now: DateTime<Utc>) -> Result<TokenInfo> {
    token.check().map_err(StoreError::Invalid)?;
    if token_get(conn, &token.name)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a token named {:?} exists already; revoke it first or choose another name",
            token.name
        )));
    }
    let scopes = serde_json::to_string(&token.scopes).map_err(|e| corrupt("scopes", e))?;
    let queues = token
        .queues
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| corrupt("queues", e))?;
    conn.prepare_cached(
        "INSERT INTO tokens (name, hash, scopes, queues, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(db_err)?
    .execute(params![token.name, token.hash, scopes, queues, micros(now)])
    .map_err(db_err)?;
    Ok(TokenInfo {
        name: token.name.clone(),
        hash: token.hash.clone(),
        scopes: token.scopes.clone(),
        queues: token.queues.clone(),
        created_at: time(micros(now))?,
    })
}

pub fn token_revoke(conn: &Connection, name: &str) -> Result<TokenInfo> {
    let token = token_get(conn, name)?
        .ok_or_else(|| StoreError::Unknown(format!("no token named {name:?}")))?;
    conn.prepare_cached("DELETE FROM tokens WHERE name = ?1")
        .map_err(db_err)?
        .execute([name])
        .map_err(db_err)?;
    Ok(token)
}

pub fn token_list(conn: &Connection) -> Result<Vec<TokenInfo>> {
    let mut stmt = conn
        .prepare_cached(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name"))
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], token_from_row)
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    rows.into_iter().map(decode_token).collect()
}

pub fn audit_append(conn: &Connection, entry: &NewAudit, now: DateTime<Utc>) -> Result<i64> {
    for (field, text) in [
        ("actor", &entry.actor),
        ("action", &entry.action),
        ("target", &entry.target),
    ] {
        hinter_core::limits::check_text(field, text).map_err(StoreError::Invalid)?;
    }
    hinter_core::limits::check_json("detail", &entry.detail).map_err(StoreError::Invalid)?;
    let detail = (!entry.detail.is_null()).then(|| entry.detail.to_string());
    conn.prepare_cached(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(db_err)?
    .execute(params![
        micros(now),
        entry.actor,
        entry.action,
        entry.target,
        detail
    ])
    .map_err(db_err)?;
    Ok(conn.last_insert_rowid())
}

pub fn audit_list(conn: &Connection, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, actor, action, target, detail FROM audit \
             WHERE id < ?1 ORDER BY id DESC LIMIT ?2",
        )
        .map_err(db_err)?;
    let rows = stmt
        .query_map(params![before.unwrap_or(i64::MAX), limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(db_err)?;
    rows.into_iter()
        .map(|(id, at, actor, action, target, detail)| {
            Ok(AuditEntry {
                id,
                at: time(at)?,
                actor,
                action,
                target,
                detail: match detail {
                    None => serde_json::Value::Null,
                    Some(text) => {
                        serde_json::from_str(&text).map_err(|e| corrupt("audit detail", e))?
                    }
                },
            })
        })
        .collect()
}
