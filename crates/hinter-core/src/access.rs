//! API tokens, their scopes, and the audit record of admin actions.
//!
//! A token's secret is `hnt_` followed by 64 hex digits (32 random bytes). Only its SHA-256
//! ([`hash_secret`], lower-case hex) is stored or configured; the secret is shown once, when
//! it is made ([`generate_secret`]), and compared through its hash in constant time by the
//! server. Tokens are named; the name is what the audit record shows.

use crate::definition::{validate_name, FieldError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What every token secret starts with, so a leaked one is easy to recognise (and scan for).
pub const TOKEN_PREFIX: &str = "hnt_";
/// Random bytes in a secret.
pub const SECRET_BYTES: usize = 32;
/// Longest token name.
pub const MAX_TOKEN_NAME_LEN: usize = 64;
/// Most queues a token may be limited to.
pub const MAX_TOKEN_QUEUES: usize = 100;

/// The actor of an admin action made straight on the store (`hinter tokens …`).
pub const ACTOR_CLI: &str = "cli";
/// The actor of an admin action through an API that requires no token (loopback, no tokens).
pub const ACTOR_NO_AUTH: &str = "(no auth)";

/// What a token may do. `admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Enqueue jobs (`POST /api/v1/jobs`, `/jobs/batch`).
    Enqueue,
    /// Read jobs, queues, events, workers.
    Read,
    /// Lease and finish jobs: the worker protocol.
    Work,
    /// Cancel, retry, pause, resume, read the audit record; and everything above.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Enqueue, Scope::Read, Scope::Work, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Enqueue => "enqueue",
            Scope::Read => "read",
            Scope::Work => "work",
            Scope::Admin => "admin",
        }
    }

    /// Whether holding `self` allows what `needed` allows.
    pub fn covers(self, needed: Scope) -> bool {
        self == needed || self == Scope::Admin
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a scope; scopes are enqueue, read, work, admin"))
    }
}

/// Parses a comma-separated list of scopes (`enqueue,read`); duplicates count once.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        scopes.push(item.parse::<Scope>()?);
    }
    if scopes.is_empty() {
        return Err("no scope given; scopes are enqueue, read, work, admin".into());
    }
    scopes.sort();
    scopes.dedup();
    Ok(scopes)
}

/// A new random secret and its hash, as stored.
pub fn generate_secret() -> (String, String) {
    use rand::RngCore;
    let mut bytes = [0u8; SECRET_BYTES];
    // ThreadRng is a cryptographically secure generator seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let hash = hash_secret(&secret);
    (secret, hash)
}

/// The SHA-256 of a secret in lower-case hex: what is stored and compared.
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether `hash` looks like [`hash_secret`]'s output (64 lower-case hex digits).
pub fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// A token to store: its name, the hash of its secret, what it may do and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub name: String,
    /// [`hash_secret`] of the secret.
    pub hash: String,
    pub scopes: Vec<Scope>,
    /// Only these queues; `None`: every queue.
    pub queues: Option<Vec<String>>,
}

impl NewToken {
    /// Checks what a store keeps: a valid name, a hash, at least one scope, and (when
    /// limited) 1 to [`MAX_TOKEN_QUEUES`] valid queue names.
    pub fn check(&self) -> Result<(), FieldError> {
        check_token_name("name", &self.name)?;
        if !is_hash(&self.hash) {
            return Err(FieldError::new(
                "hash",
                "must be a SHA-256 in lower-case hex (64 digits)",
            ));
        }
        if self.scopes.is_empty() {
            return Err(FieldError::new("scopes", "must hold at least one scope"));
        }
        if let Some(queues) = &self.queues {
            if queues.is_empty() || queues.len() > MAX_TOKEN_QUEUES {
                return Err(FieldError::new(
                    "queues",
                    format!("must name 1 to {MAX_TOKEN_QUEUES} queues (none: every queue)"),
                ));
            }
            for (i, queue) in queues.iter().enumerate() {
                validate_name(&format!("queues[{i}]"), queue)?;
            }
        }
        Ok(())
    }
}

/// Checks a token name: 1 to [`MAX_TOKEN_NAME_LEN`] letters, digits, `-`, `_`, `.`, `:`.
pub fn check_token_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.len() > MAX_TOKEN_NAME_LEN {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {MAX_TOKEN_NAME_LEN} characters long"),
        ));
    }
    validate_name(field, name)
}

/// A stored token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    /// [`hash_secret`] of the secret; not shown by listings.
    #[serde(skip)]
    pub hash: String,
    pub scopes: Vec<Scope>,
    /// Only these queues; `None`: every queue.
    pub queues: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
}

/// An admin action to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAudit {
    /// Who: a token's name, [`ACTOR_CLI`] or [`ACTOR_NO_AUTH`].
    pub actor: String,
    /// What: `job.cancel`, `job.retry`, `queue.pause`, `queue.resume`, `token.create`,
    /// `token.revoke`.
    pub action: String,
    /// On what: a job id, a queue or a token name.
    pub target: String,
    /// More about it (a token's scopes, a job's queue), or `null`.
    pub detail: Value,
}

/// A recorded admin action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Grows with each entry; pages go back from it.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let (a, hash_a) = generate_secret();
        let (b, _) = generate_secret();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 2 * SECRET_BYTES);
        assert_eq!(hash_a, hash_secret(&a));
        assert!(is_hash(&hash_a));
        // A known SHA-256, so declared hashes (`sha256sum`) match.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn scopes_parse_and_refuse_unknown_names() {
        assert_eq!(
            parse_scopes("read, enqueue,read"),
            Ok(vec![Scope::Enqueue, Scope::Read])
        );
        assert!(parse_scopes("").is_err());
        let err = parse_scopes("read,write").expect_err("write is no scope");
        assert!(err.contains("\"write\""), "{err}");
        assert!(Scope::Admin.covers(Scope::Work));
        assert!(!Scope::Work.covers(Scope::Read));
    }

    #[test]
    fn new_tokens_are_checked() {
        let ok = NewToken {
            name: "web-frontend".into(),
            hash: hash_secret("x"),
            scopes: vec![Scope::Enqueue],
            queues: Some(vec!["mail".into()]),
        };
        assert_eq!(ok.check(), Ok(()));
        let field = |t: NewToken| t.check().expect_err("refused").field;
        assert_eq!(
            field(NewToken {
                name: "a b".into(),
                ..ok.clone()
            }),
            "name"
        );
        assert_eq!(
            field(NewToken {
                hash: "ABC".into(),
                ..ok.clone()
            }),
            "hash"
        );
        assert_eq!(
            field(NewToken {
                scopes: vec![],
                ..ok.clone()
            }),
            "scopes"
        );
        assert_eq!(
            field(NewToken {
                queues: Some(vec![]),
                ..ok.clone()
            }),
            "queues"
        );
        assert_eq!(
            field(NewToken {
                queues: Some(vec!["ok".into(), "no way".into()]),
                ..ok
            }),
            "queues[1]"
        );
    }
}
