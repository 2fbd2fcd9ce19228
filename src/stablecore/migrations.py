"""The database schema as numbered migrations; `PRAGMA user_version` says which ran.

Entry N moves a database from version N to N+1. `Store` runs the missing ones at start in one
transaction, so a crash mid-way leaves the previous version intact. Never edit or reorder a
released entry: append a new one (a column, a table, an index).
"""

from __future__ import annotations

import sqlite3

# Version 1 is the first schema (0.1.0), written with IF NOT EXISTS so that data folders made
# before versioning (user_version 0) upgrade too.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, created REAL NOT NULL,
        next_index INTEGER NOT NULL DEFAULT 1);
    CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, spec TEXT NOT NULL,
        params TEXT NOT NULL, inputs TEXT NOT NULL, session_id TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0, owner TEXT, state TEXT NOT NULL,
        created REAL NOT NULL, started REAL, finished REAL, worker TEXT,
        outputs TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
        model_key TEXT, batch_key TEXT, timeout REAL);
    CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, priority DESC, seq);
    CREATE INDEX IF NOT EXISTS jobs_session ON jobs(session_id, seq);
    CREATE TABLE IF NOT EXISTS artifacts (
        id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, kind TEXT NOT NULL, mime TEXT NOT NULL,
        size INTEGER NOT NULL, blob TEXT NOT NULL, name TEXT NOT NULL, path TEXT,
        session_id TEXT, job_id TEXT, created REAL NOT NULL, meta TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX IF NOT EXISTS artifacts_sha ON artifacts(sha256);
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, type TEXT NOT NULL,
        job_id TEXT, session_id TEXT, data TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
    """,
    # 2: a failed job keeps its traceback; previews are found by kind for pruning.
    """
    ALTER TABLE jobs ADD COLUMN traceback TEXT;
    CREATE INDEX artifacts_kind ON artifacts(kind, created);
    """,
    # 3: workflows. A node's job knows its workflow and node name; a job's cache key lets an
    # unchanged node reuse an earlier result; events carry the workflow for one-stream follow.
    """
    ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
    ALTER TABLE jobs ADD COLUMN node TEXT;
    ALTER TABLE jobs ADD COLUMN cache_key TEXT;
    ALTER TABLE jobs ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_workflow ON jobs(workflow_id, node);
    CREATE INDEX jobs_cache ON jobs(cache_key, state);
    ALTER TABLE events ADD COLUMN workflow_id TEXT;
    CREATE INDEX events_workflow ON events(workflow_id, seq);
    CREATE TABLE workflows (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, graph TEXT NOT NULL, state TEXT NOT NULL,
        session_id TEXT NOT NULL, owner TEXT, job_id TEXT, created REAL NOT NULL,
        finished REAL, error TEXT);
    CREATE TABLE saved_workflows (
        name TEXT PRIMARY KEY, graph TEXT NOT NULL, expose TEXT NOT NULL, description TEXT,
        owner TEXT, created REAL NOT NULL);
    """,
    # 4: users with roles; API tokens and web sessions (only a sha256 of each secret is kept);
    # the audit trail; owners on sessions, artifacts and events; indexes for each owner's
    # share of the queue (fair share) and for each owner's listings.
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL COLLATE NOCASE, role TEXT NOT NULL,
        password TEXT NOT NULL, created REAL NOT NULL);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, user_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
        hash TEXT UNIQUE NOT NULL, csrf TEXT, created REAL NOT NULL, expires REAL,
        last_used REAL);
    CREATE INDEX tokens_user ON tokens(user_id, kind);
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, action TEXT NOT NULL,
        actor TEXT, target TEXT, address TEXT, ok INTEGER NOT NULL, data TEXT NOT NULL);
    ALTER TABLE sessions ADD COLUMN owner TEXT;
    ALTER TABLE artifacts ADD COLUMN owner TEXT;
    ALTER TABLE events ADD COLUMN owner TEXT;
    CREATE INDEX jobs_owner ON jobs(owner, seq);
    CREATE INDEX jobs_owner_queue ON jobs(state, owner, priority DESC, seq);
    CREATE INDEX jobs_owner_started ON jobs(owner, started);
    CREATE INDEX events_owner ON events(owner, seq);
    CREATE INDEX sessions_owner ON sessions(owner, created);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection, found: int) -> None:
    """Run the migrations after version `found`, inside the caller's transaction."""
    for script in MIGRATIONS[found:]:
        for statement in filter(str.strip, script.split(";")):
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
