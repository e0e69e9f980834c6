//! Tokens, scopes and queues over real HTTP on loopback against a real PostgreSQL store (a
//! fresh schema per test in the database of `HINTER_TEST_DATABASE_URL`): the same cases as
//! `auth.rs` (`auth/cases.rs`). Without the variable the cases say so and pass, except
//! under CI=true, where they fail: CI must never skip them.

#[path = "support/postgres.rs"]
mod postgres;

mod backend {
    use hinter_core::Backend;
    use std::sync::Arc;

    pub async fn open() -> Option<(Arc<dyn Backend>, Box<dyn std::any::Any + Send + Sync>)> {
        super::postgres::open("hinter_auth_", "API", 4).await
    }
}

include!("auth/cases.rs");
