#!/usr/bin/env python3
"""The floor of hinter's SQLite schema: its bulk insert and its drain as plain SQL run by
SQLite itself (no Rust, no channels, no handlers), on a copy of a freshly migrated store,
with the listing indexes and the event log on and off. See README.md.

Usage: sqlite_floor.py HINTER_DB [ROUNDS]   (HINTER_DB: a store made by `hinter migrate`)
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import time

SOURCE = sys.argv[1]
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
WORK = tempfile.mkdtemp(prefix="hinter-floor-")
# The listing indexes a job is in while it is active (migrations 13 and 15).
LISTING = ["jobs_active_queue", "jobs_active_job", "jobs_queued_since"]

# 1,000 queued jobs in one statement, shaped as `job_insert_many` writes them (a UUIDv7-like
# text id, a small JSON payload), then their `created` events in one more.
INSERT = """WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < 1000)
INSERT INTO jobs (seq, id, job, queue, payload, state, priority, max_attempts, run_at,
                  created_at, singleton)
SELECT ?1 + i, printf('01a22f0e-%04x-7%03x-8%03x-%012x', (?1 + i) >> 24, ((?1 + i) >> 12) & 4095,
                      (?1 + i) & 4095, ?1 + i),
       'bench', 'default', '{"n":' || (?1 + i) || ',"t":1234567890123}', 'queued', 0, 25,
       1764547200000000, 1764547200000000, 0
FROM g"""
CREATED = """INSERT INTO events (at, kind, job_seq, job_id, job, queue, attempt)
SELECT created_at, 'created', seq, id, job, queue, 0 FROM jobs
WHERE seq BETWEEN ?1 + 1 AND ?1 + 1000"""
# A lease round and its completions, each one transaction, as `lease_round` and
# `job_complete_many` write them (job, run, event per job).
LEASE = """UPDATE jobs SET state = 'running', attempt = attempt + 1, worker_id = 'w',
  lease_token = seq, lease_expires_at = ?2, started_at = ?2, deadline_at = NULL
WHERE seq IN (SELECT seq FROM jobs WHERE state = 'queued' AND queue = 'default'
              ORDER BY priority DESC, seq LIMIT ?1)
RETURNING seq, id, job, queue, payload, attempt"""
RUNS = """INSERT INTO runs (job_seq, attempt, worker_id, lease_token, started_at)
SELECT seq, attempt, 'w', lease_token, ?3 FROM jobs WHERE seq BETWEEN ?1 AND ?2"""
EVENTS = """INSERT INTO events (at, kind, job_seq, job_id, job, queue, attempt)
SELECT ?3, ?4, seq, id, job, queue, attempt FROM jobs WHERE seq BETWEEN ?1 AND ?2"""
SUCCEED = """UPDATE jobs SET state = 'succeeded', finished_at = ?3, lease_token = NULL,
  lease_expires_at = NULL, deadline_at = NULL WHERE seq BETWEEN ?1 AND ?2"""
SUCCEED_RUNS = """UPDATE runs SET outcome = 'succeeded', finished_at = ?3, duration_ms = 0
WHERE job_seq BETWEEN ?1 AND ?2 AND outcome = 'running'"""


def store(drop):
    """A copy of the migrated store, durable as hinter's default (WAL, synchronous=FULL)."""
    path = os.path.join(WORK, "floor.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    shutil.copy(SOURCE, path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -64000")
    for index in drop:
        conn.execute(f"DROP INDEX {index}")
    return conn


def insert(conn, batch, events=True):
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(INSERT, (batch * 1000,))
    if events:
        conn.execute(CREATED, (batch * 1000,))
    conn.execute("COMMIT")


def enqueue(drop=(), events=True, batches=60):
    conn = store(drop)
    began = time.perf_counter()
    for batch in range(batches):
        insert(conn, batch, events)
    return batches * 1000 / (time.perf_counter() - began)


def drain(drop=(), per=100, queued=30, rounds=200):
    conn = store(drop)
    for batch in range(queued):
        insert(conn, batch)
    began = time.perf_counter()
    done = 0
    for _ in range(rounds):
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(LEASE, (per, 5)).fetchall()
        low, high = min(r[0] for r in rows), max(r[0] for r in rows)
        conn.execute(RUNS, (low, high, 5))
        conn.execute(EVENTS, (low, high, 5, "started"))
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(SUCCEED, (low, high, 6))
        conn.execute(SUCCEED_RUNS, (low, high, 6))
        conn.execute(EVENTS, (low, high, 6, "succeeded"))
        conn.execute("COMMIT")
        done += len(rows)
    return done / (time.perf_counter() - began)


print(f"SQLite {sqlite3.sqlite_version}, {ROUNDS} rounds, jobs/s")
for _ in range(ROUNDS):
    print(
        "enqueue: all %6.0f | no created events %6.0f | no listing indexes %6.0f | "
        "neither, nor jobs_queued %6.0f"
        % (
            enqueue(),
            enqueue(events=False),
            enqueue(LISTING),
            enqueue(LISTING + ["jobs_queued"], events=False),
        )
    )
for _ in range(ROUNDS):
    print(
        "drain, rounds of 100: all %6.0f | no listing indexes %6.0f"
        % (drain(), drain(LISTING))
    )
shutil.rmtree(WORK)
