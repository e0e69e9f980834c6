//! `Idempotency-Key` on enqueues against a real PostgreSQL store (a fresh schema per test in
//! the database of `HINTER_TEST_DATABASE_URL`), over real HTTP on loopback: the same cases as
//! `idempotency.rs`. Without the variable the cases say so and pass, except under CI=true,
//! where they fail: CI must never skip them.

#[path = "support/postgres.rs"]
mod postgres;

mod backend {
    use hinter_core::Backend;
    use std::sync::Arc;

    pub async fn open() -> Option<(Arc<dyn Backend>, Box<dyn std::any::Any + Send + Sync>)> {
        super::postgres::open("hinter_idem_", "idempotency", 8).await
    }
}

include!("idempotency/cases.rs");
