//! The store's write transaction, with `BEGIN` and `COMMIT` riding with statements.
//!
//! tokio-postgres pipelines: a request is sent when its future is first polled, and the
//! server answers in order. Its `Transaction` awaits `BEGIN` before the first statement can go
//! and `commit` takes the transaction, so a write of one statement cost four round trips
//! (`BEGIN`, the statement, the notification, `COMMIT`). Here `BEGIN` is sent with the
//! transaction's first statements and `COMMIT` with its notification: two round trips. At
//! 0.25 ms a round trip on two busy cores, that was half of a job's latency on PostgreSQL
//! (docs/performance.md, "Latency, PostgreSQL").
//!
//! A statement sent with `BEGIN` runs inside the transaction: the server executes requests
//! in the order they were sent. Sent, not asked for: a statement not yet prepared on the
//! connection waits for its `Parse` round trip and goes out after whatever was sent
//! meanwhile, so what must run before a pipelined `COMMIT` (or before the lease's
//! candidates) is prepared first. `BEGIN` cannot fail alone on a working connection (one
//! already in a transaction only warns), and on a broken one everything after it fails too.
//!
//! What `Transaction`'s drop did is kept: a transaction neither committed nor rolled back
//! (its future dropped mid-way, or a statement failed) is rolled back before its connection
//! goes back to the pool.

use crate::ops::{self, Conn};
use async_trait::async_trait;
use std::future::Future;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

/// A `READ COMMITTED` transaction on a pooled connection (see the module).
pub(crate) struct Tx {
    /// `None` once the transaction ended ([`Tx::commit`]); still there on drop, it is
    /// rolled back.
    client: Option<deadpool_postgres::Client>,
}

const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
/// [`BEGIN`] with [`crate::GENERIC_PLANS`], in one message.
const BEGIN_GENERIC: &str =
    "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL plan_cache_mode = force_generic_plan";

impl Tx {
    /// A transaction on `client`; nothing is sent until [`Tx::run`].
    pub(crate) fn new(client: deadpool_postgres::Client) -> Self {
        Tx {
            client: Some(client),
        }
    }

    fn client(&self) -> &deadpool_postgres::Client {
        self.client
            .as_ref()
            .expect("a transaction holds its connection until it ends")
    }

    /// Sends `BEGIN` (with `generic_plans`, [`crate::GENERIC_PLANS`] too), then runs `body`
    /// in the transaction: `BEGIN` goes out with `body`'s first statements.
    pub(crate) async fn run<T>(
        &self,
        generic_plans: bool,
        body: impl Future<Output = ops::Result<T>>,
    ) -> ops::Result<T> {
        let begin = if generic_plans { BEGIN_GENERIC } else { BEGIN };
        let (began, value) = tokio::join!(self.client().batch_execute(begin), body);
        // `BEGIN`'s failure first: what `body` saw then is only its consequence.
        began?;
        value
    }

    /// Sends `last` (a statement and its parameters: the notification) and `COMMIT`
    /// together. A failure of `last` aborts the transaction, and `COMMIT` then rolls it back:
    /// `last`'s error is the answer. `last` is prepared first (no round trip once cached):
    /// one still to prepare would be sent after `COMMIT`, outside the transaction.
    pub(crate) async fn commit(
        mut self,
        last: Option<(&str, &[&(dyn ToSql + Sync)])>,
    ) -> ops::Result<()> {
        let last = match last {
            Some((sql, params)) => Some((self.prepare_cached(sql).await?, params)),
            None => None,
        };
        let run_last = async {
            match &last {
                Some((statement, params)) => {
                    Conn::execute(&self, statement, params).await.map(drop)
                }
                None => Ok(()),
            }
        };
        let (last, committed) = tokio::join!(run_last, self.client().batch_execute("COMMIT"));
        // Ended either way (committed, or rolled back by the server): back to the pool.
        drop(self.client.take());
        last?;
        committed?;
        Ok(())
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        // Rolled back before the connection is pooled again; without a runtime to do it
        // on, the connection is closed instead, which rolls back on the server.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = client.batch_execute("ROLLBACK").await {
                        tracing::debug!(error = %e, "rolling back an abandoned transaction");
                        drop(deadpool_postgres::Object::take(client));
                    }
                });
            }
            Err(_) => drop(deadpool_postgres::Object::take(client)),
        }
    }
}

#[async_trait]
impl Conn for Tx {
    async fn prepare_cached(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        self.client().prepare_cached(sql).await
    }
    async fn query(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        Conn::query(self.client(), stmt, params).await
    }
    async fn query_opt(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, tokio_postgres::Error> {
        Conn::query_opt(self.client(), stmt, params).await
    }
    async fn execute(
        &self,
        stmt: &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        Conn::execute(self.client(), stmt, params).await
    }
    async fn batch_execute(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        Conn::batch_execute(self.client(), sql).await
    }
}

#[cfg(test)]
mod begin {
    #[test]
    fn generic_plans_begin_sets_the_generic_plans_of_the_crate() {
        assert_eq!(
            super::BEGIN_GENERIC,
            format!("{}; {}", super::BEGIN, crate::GENERIC_PLANS)
        );
    }
}

#[cfg(all(test, hinter_test_database))]
mod tests {
    use super::*;
    use crate::{PostgresOptions, PostgresStore, TestSchema};
    use std::time::Duration;

    /// A store on a fresh schema with a single pooled connection (so the next `client()` is
    /// the connection the last transaction used) and a table `probe(n int)`.
    async fn single_connection(prefix: &str) -> (TestSchema, PostgresStore) {
        let url = std::env::var("HINTER_TEST_DATABASE_URL").expect("HINTER_TEST_DATABASE_URL");
        let schema = TestSchema::fresh(&url, prefix);
        let options = PostgresOptions {
            schema: Some(schema.name.clone()),
            max_connections: 1,
            min_connections: 0,
            ..PostgresOptions::default()
        };
        let store = PostgresStore::connect(&url, options)
            .await
            .expect("connect");
        let client = store.client().await.expect("client");
        client
            .batch_execute("CREATE TABLE probe (n int)")
            .await
            .expect("create probe");
        (schema, store)
    }

    /// The probe's rows as another session sees them: committed ones only.
    async fn committed(schema: &TestSchema) -> i64 {
        let session = crate::connect_session(&schema.url).await.expect("session");
        let row = session
            .query_one(
                &format!("SELECT count(*) FROM \"{}\".probe", schema.name),
                &[],
            )
            .await
            .expect("count");
        row.get(0)
    }

    async fn insert(tx: &Tx, n: i32) -> ops::Result<()> {
        ops::execute(tx, "INSERT INTO probe VALUES ($1)", &[&n]).await?;
        Ok(())
    }

    /// The pooled connection, once it is back, is outside any transaction: its own write is
    /// seen by another session at once.
    async fn pooled_connection_is_idle(store: &PostgresStore, schema: &TestSchema) {
        let before = committed(schema).await;
        let client = store.client().await.expect("client");
        client
            .batch_execute("INSERT INTO probe VALUES (100)")
            .await
            .expect("insert outside a transaction");
        assert_eq!(
            committed(schema).await,
            before + 1,
            "the connection came back inside a transaction"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn statements_sent_with_begin_commit_with_the_last_one() {
        let (schema, store) = single_connection("hinter_test_tx_commit_").await;
        let tx = Tx::new(store.client().await.expect("client"));
        tx.run(true, insert(&tx, 1)).await.expect("run");
        // Inside the transaction: nobody else sees the row before the commit.
        assert_eq!(committed(&schema).await, 0);
        tx.commit(Some(("INSERT INTO probe VALUES ($1)", &[&2i32])))
            .await
            .expect("commit");
        assert_eq!(committed(&schema).await, 2);
        pooled_connection_is_idle(&store, &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_last_statement_rolls_back_what_came_before() {
        let (schema, store) = single_connection("hinter_test_tx_fail_").await;
        let tx = Tx::new(store.client().await.expect("client"));
        tx.run(false, insert(&tx, 1)).await.expect("run");
        // Not prepared on this connection before: a statement still to prepare.
        let failed = tx.commit(Some(("SELECT 1 / $1", &[&0i32]))).await;
        assert!(failed.is_err(), "division by zero answered {failed:?}");
        assert_eq!(committed(&schema).await, 0);
        pooled_connection_is_idle(&store, &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_transaction_rolls_back_before_its_connection_is_pooled() {
        let (schema, store) = single_connection("hinter_test_tx_drop_").await;
        // Dropped after its body ran, without a commit.
        let tx = Tx::new(store.client().await.expect("client"));
        tx.run(false, insert(&tx, 1)).await.expect("run");
        drop(tx);
        assert_eq!(committed(&schema).await, 0);
        pooled_connection_is_idle(&store, &schema).await;

        // Dropped while a statement of it was still running on the server.
        let tx = Tx::new(store.client().await.expect("client"));
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            tx.run(false, async {
                insert(&tx, 2).await?;
                ops::execute(&tx, "SELECT pg_sleep(0.3)", &[]).await?;
                Ok(())
            }),
        )
        .await;
        assert!(cut.is_err(), "the transaction's body ended in 50 ms");
        drop(tx);
        // Waits for the pool's one connection: given back after the rollback.
        let before = committed(&schema).await;
        pooled_connection_is_idle(&store, &schema).await;
        assert_eq!(before, 1, "only the row written outside a transaction");
    }
}
