#!/bin/sh
# The floor of hinter's PostgreSQL schema: its bulk insert and its drain as plain SQL run by
# pgbench on one connection (no Rust, no pool, no handlers), in schemas made by
# `hinter migrate`, with the listing indexes, the count trigger and the event log on and
# off. See README.md.
#
# Usage: pg_floor.sh HINTER_BINARY DATABASE_URL [ROUNDS]
set -eu
HINTER=$1
URL=$2
ROUNDS=${3:-3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
sql() { PGOPTIONS="-c client_min_messages=warning" psql "$URL" -qAt -v ON_ERROR_STOP=1 "$@"; }

# floor_all: as migrated. floor_lean: without the three listing indexes a queued job is in.
# floor_bare: a row, its primary key and its unique id only (no count trigger either).
for s in floor_all floor_lean floor_bare; do
    sql -c "DROP SCHEMA IF EXISTS $s CASCADE" 2>/dev/null
    "$HINTER" migrate --database "$URL" --schema "$s" >/dev/null 2>&1
done
sql -c "DROP INDEX floor_lean.jobs_active_job, floor_lean.jobs_active_queue, floor_lean.jobs_queued_since"
sql -c "DROP INDEX floor_bare.jobs_active_job, floor_bare.jobs_active_queue, floor_bare.jobs_queued_since, floor_bare.jobs_queued" \
    -c "ALTER TABLE floor_bare.jobs DISABLE TRIGGER jobs_count_insert"

for s in floor_all floor_lean floor_bare; do
    # 1,000 queued jobs as job_insert_many writes them: seqs drawn first, then the rows and
    # (but in floor_bare) their `created` events, in one statement.
    events="logged AS (INSERT INTO events (at, kind, job_id, job, queue, attempt)
            SELECT now(), 'created', id, job, queue, 0 FROM ins ORDER BY seq)"
    [ "$s" = floor_bare ] && events="logged AS (SELECT 1)"
    cat > "$WORK/insert_$s.sql" <<SQL
SET search_path TO $s;
WITH s AS MATERIALIZED (
    SELECT array_agg(v ORDER BY v) AS vs
    FROM (SELECT nextval('jobs_seq_seq') AS v FROM generate_series(1, 1000)
          WHERE pg_current_xact_id() IS NOT NULL) AS g),
u AS (SELECT gen_random_uuid() AS id, json_build_object('n', i, 't', 1234567890123) AS payload,
             i AS ord
      FROM generate_series(1, 1000) AS i),
ins AS (INSERT INTO jobs (seq, id, job, queue, payload, state, priority, max_attempts, run_at,
                          created_at, singleton)
        SELECT s.vs[u.ord], u.id, 'bench', 'default', u.payload, 'queued', 0, 25, now(), now(),
               false
        FROM u CROSS JOIN s RETURNING seq, id, job, queue),
$events
SELECT count(*) FROM ins;
SQL
    # A lease round of 100 and its completions, each one transaction (job, run, event per job).
    cat > "$WORK/drain_$s.sql" <<SQL
SET search_path TO $s;
BEGIN;
WITH c AS (SELECT seq FROM jobs WHERE state = 'queued' AND queue = 'default'
           ORDER BY priority DESC, seq LIMIT 100 FOR UPDATE SKIP LOCKED),
l AS (UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, worker_id = 'w',
             lease_token = j.seq, lease_expires_at = now() + interval '30s', started_at = now()
      FROM c WHERE j.seq = c.seq RETURNING j.seq, j.id, j.job, j.queue, j.attempt, j.lease_token),
r AS (INSERT INTO runs (job_seq, attempt, worker_id, lease_token, started_at)
      SELECT seq, attempt, 'w', lease_token, now() FROM l),
e AS (INSERT INTO events (at, kind, job_id, job, queue, attempt)
      SELECT now(), 'started', id, job, queue, attempt FROM l ORDER BY seq)
SELECT min(seq) AS lo, max(seq) AS hi FROM l \gset
COMMIT;
BEGIN;
WITH d AS (UPDATE jobs SET state = 'succeeded', finished_at = now(), lease_token = NULL,
                  lease_expires_at = NULL
           WHERE seq BETWEEN :lo AND :hi AND state = 'running'
           RETURNING seq, id, job, queue, attempt),
r AS (UPDATE runs SET outcome = 'succeeded', finished_at = now(), duration_ms = 0
      WHERE job_seq BETWEEN :lo AND :hi AND outcome = 'running'),
e AS (INSERT INTO events (at, kind, job_id, job, queue, attempt)
      SELECT now(), 'succeeded', id, job, queue, attempt FROM d ORDER BY seq)
SELECT count(*) FROM d;
COMMIT;
SQL
done

fresh() {
    sql -c "TRUNCATE $1.jobs, $1.runs, $1.job_logs, $1.events, $1.job_count_deltas" -c CHECKPOINT
}
rate() { # jobs per transaction, pgbench output
    awk -v per="$1" '/latency average/ { printf "%6.0f", per * 1000 / $4 }'
}
echo "PostgreSQL $(sql -c 'SHOW server_version'), one connection, $ROUNDS rounds, jobs/s"
for _ in $(seq "$ROUNDS"); do
    line="enqueue:"
    for s in floor_all floor_lean floor_bare; do
        fresh "$s"
        line="$line $s $(pgbench "$URL" -n -t 40 -f "$WORK/insert_$s.sql" 2>&1 | rate 1000) |"
    done
    echo "$line"
done
for _ in $(seq "$ROUNDS"); do
    line="drain, rounds of 100:"
    for s in floor_all floor_lean; do
        fresh "$s"
        pgbench "$URL" -n -t 30 -f "$WORK/insert_$s.sql" >/dev/null 2>&1
        sql -c "VACUUM ANALYZE $s.jobs" -c CHECKPOINT
        line="$line $s $(pgbench "$URL" -n -t 150 -f "$WORK/drain_$s.sql" 2>&1 | rate 100) |"
    done
    echo "$line"
done
for s in floor_all floor_lean floor_bare; do sql -c "DROP SCHEMA $s CASCADE"; done
