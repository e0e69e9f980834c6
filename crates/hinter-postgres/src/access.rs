//! PostgreSQL: API tokens and the audit record (`tokens`, `audit`; migration 7).

use crate::ops::{get, Conn, Error, Result};
use chrono::{DateTime, Utc};
use hinter_core::access::{AuditEntry, NewAudit, NewToken, Scope, TokenInfo};
use hinter_core::StoreError;
use serde_json::Value;
use tokio_postgres::Row;

const TOKEN_COLUMNS: &str = "name, hash, scopes, queues, created_at";

fn token_from_row(row: &Row) -> Result<TokenInfo> {
    let scopes: Vec<String> = get(row, 2)?;
    let scopes = scopes
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Store(StoreError::Corrupt(format!("token scopes: {e}"))))?;
    Ok(TokenInfo {
        name: get(row, 0)?,
        hash: get(row, 1)?,
        scopes,
        queues: get(row, 3)?,
        created_at: get(row, 4)?,
    })
}

pub async fn token_create<C: Conn>(
    c: &C,
    token: &NewToken,
    now: DateTime<Utc>,
) -> Result<TokenInfo> {
    token.check().map_err(StoreError::Invalid)?;
    let scopes: Vec<&str> = token.scopes.iter().map(|s| s.as_str()).collect();
    // ON CONFLICT: a taken name is an answer, and must not abort the caller's transaction.
    let stmt = c
        .prepare_cached(&format!(
            "INSERT INTO tokens (name, hash, scopes, queues, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING {TOKEN_COLUMNS}"
        ))
        .await?;
    let row = c
        .query_opt(
            &stmt,
            &[&token.name, &token.hash, &scopes, &token.queues, &now],
        )
        .await?;
    match row {
        Some(row) => token_from_row(&row),
        None => Err(Error::Store(StoreError::Conflict(format!(
            "a token named {:?} exists already; revoke it first or choose another name",
            token.name
        )))),
    }
}

pub async fn token_revoke<C: Conn>(c: &C, name: &str) -> Result<TokenInfo> {
    let stmt = c
        .prepare_cached(&format!(
            "DELETE FROM tokens WHERE name = $1 RETURNING {TOKEN_COLUMNS}"
        ))
        .await?;
    match c.query_opt(&stmt, &[&name]).await? {
        Some(row) => token_from_row(&row),
        None => Err(Error::Store(StoreError::Unknown(format!(
            "no token named {name:?}"
        )))),
    }
}

pub async fn token_list<C: Conn>(c: &C) -> Result<Vec<TokenInfo>> {
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY name COLLATE \"C\""
        ))
        .await?;
    c.query(&stmt, &[])
        .await?
        .iter()
        .map(token_from_row)
        .collect()
}

pub async fn audit_append<C: Conn>(c: &C, entry: &NewAudit, now: DateTime<Utc>) -> Result<i64> {
    for (field, text) in [
        ("actor", &entry.actor),
        ("action", &entry.action),
        ("target", &entry.target),
    ] {
        hinter_core::limits::check_text(field, text).map_err(StoreError::Invalid)?;
    }
    hinter_core::limits::check_json("detail", &entry.detail).map_err(StoreError::Invalid)?;
    let detail = (!entry.detail.is_null()).then_some(&entry.detail);
    let stmt = c
        .prepare_cached(
            "INSERT INTO audit (at, actor, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .await?;
    let rows = c
        .query(
            &stmt,
            &[&now, &entry.actor, &entry.action, &entry.target, &detail],
        )
        .await?;
    let row = rows
        .first()
        .ok_or_else(|| Error::Store(StoreError::Corrupt("audit insert returned no id".into())))?;
    get(row, 0)
}

pub async fn audit_list<C: Conn>(
    c: &C,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let stmt = c
        .prepare_cached(
            "SELECT id, at, actor, action, target, detail FROM audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .await?;
    let rows = c
        .query(&stmt, &[&before.unwrap_or(i64::MAX), &i64::from(limit)])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(AuditEntry {
                id: get(row, 0)?,
                at: get(row, 1)?,
                actor: get(row, 2)?,
                action: get(row, 3)?,
                target: get(row, 4)?,
                detail: get::<Option<Value>>(row, 5)?.unwrap_or(Value::Null),
            })
        })
        .collect()
}
