//! The HTTP API against a real PostgreSQL store (a fresh schema per test in the database of
//! `HINTER_TEST_DATABASE_URL`), through the router without a socket: the same cases as
//! `api.rs` (`api/cases.rs`). Without the variable the cases say so and pass, except under
//! CI=true, where they fail: CI must never skip them.

#[path = "support/postgres.rs"]
mod postgres;

mod backend {
    pub const KIND: &str = "postgres";
    use hinter_core::Backend;
    use std::sync::Arc;

    pub async fn open() -> Option<(Arc<dyn Backend>, Box<dyn std::any::Any + Send + Sync>)> {
        super::postgres::open("hinter_api_", "API", 4).await
    }
}

include!("api/cases.rs");
