from pathlib import Path

import pytest

from stablecore.errors import Conflict, NotFound
from stablecore.media import sha256_file
from stablecore.store import Event, Job, JobState, Store, new_id


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "data")


def make_job(store: Store, priority: int = 0) -> Job:
    session = store.current_session()
    return store.add_job(Job(new_id("j"), "demo.job", {"a": 1}, {}, session["id"],
                             JobState.QUEUED, priority=priority))


def test_queue_order_is_priority_then_age(store: Store) -> None:
    low, high, low2 = make_job(store), make_job(store, priority=5), make_job(store)
    assert [j.id for j in store.queued(10)] == [high.id, low.id, low2.id]


def test_claim_is_all_or_nothing(store: Store) -> None:
    a, b = make_job(store), make_job(store)
    store.finish(b.id, JobState.CANCELLED)
    with pytest.raises(Conflict, match="no longer queued"):
        store.claim([a.id, b.id], "w0")
    assert store.get_job(a.id).state == JobState.QUEUED  # rolled back


def test_illegal_moves_raise(store: Store) -> None:
    job = make_job(store)
    with pytest.raises(Conflict, match="cannot become succeeded"):
        store.finish(job.id, JobState.SUCCEEDED)  # queued -> succeeded skips running
    store.claim([job.id], "w0")
    store.finish(job.id, JobState.SUCCEEDED, outputs={"x": {"id": "a_1"}})
    with pytest.raises(Conflict):
        store.finish(job.id, JobState.FAILED)


def test_events_are_published_only_after_commit(tmp_path: Path) -> None:
    seen: list[Event] = []
    store = Store(tmp_path / "d", on_event=seen.append)
    job = make_job(store)
    assert [e.type for e in seen] == ["session.created", "job.queued"]
    with pytest.raises(Conflict):
        store.finish(job.id, JobState.SUCCEEDED)
    assert len(seen) == 2
    assert [e.seq for e in store.events_since(0)] == [e.seq for e in seen]
    assert [e.type for e in store.events_since(0, job_id=job.id)] == ["job.queued"]


def test_recover_requeues_then_gives_up(store: Store) -> None:
    job = make_job(store)
    for _ in range(2):
        store.claim([job.id], "w0")
        assert [j.id for j in store.recover(max_attempts=2)] == [job.id]
        assert store.get_job(job.id).state in (JobState.QUEUED, JobState.FAILED)
    final = store.get_job(job.id)
    assert final.state == JobState.FAILED and "2 times" in (final.error or "")


def test_artifacts_are_stored_once_and_named_in_the_session(store: Store, tmp_path: Path) -> None:
    session = store.create_session("walk")
    paths = []
    for i in range(2):
        src = tmp_path / f"out{i}.txt"
        src.write_text("same bytes")
        art = store.add_artifact(src, sha256_file(src), "text", "text/plain", "txt", "x.txt",
                                 session["id"], label="demo.job")
        paths.append(art.path)
    assert paths == ["sessions/walk/0001_demo.job.txt", "sessions/walk/0002_demo.job.txt"]
    assert len(list((store.data_dir / "blobs").rglob("*.txt"))) == 1
    assert (store.data_dir / paths[1]).read_text() == "same bytes"
    with pytest.raises(NotFound):
        store.get_artifact("a_nope")
    with pytest.raises(Conflict, match="exists"):
        store.create_session("walk")


# The schema of stable-core 0.1.0, before versioning: a data folder made by it must open.
SCHEMA_0_1_0 = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, created REAL NOT NULL,
    next_index INTEGER NOT NULL DEFAULT 1);
CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
    spec TEXT NOT NULL, params TEXT NOT NULL, inputs TEXT NOT NULL, session_id TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0, owner TEXT, state TEXT NOT NULL, created REAL NOT NULL,
    started REAL, finished REAL, worker TEXT, outputs TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, model_key TEXT, batch_key TEXT, timeout REAL);
CREATE TABLE artifacts (id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, kind TEXT NOT NULL,
    mime TEXT NOT NULL, size INTEGER NOT NULL, blob TEXT NOT NULL, name TEXT NOT NULL, path TEXT,
    session_id TEXT, job_id TEXT, created REAL NOT NULL, meta TEXT NOT NULL DEFAULT '{}');
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, type TEXT NOT NULL,
    job_id TEXT, session_id TEXT, data TEXT NOT NULL);
INSERT INTO sessions VALUES ('s_1', 'old work', 1.0, 1);
INSERT INTO jobs (id, spec, params, inputs, session_id, state, created)
    VALUES ('j_old', 'demo.job', '{"a": 1}', '{}', 's_1', 'queued', 1.0);
"""


def test_a_data_folder_of_the_previous_schema_is_migrated(tmp_path: Path) -> None:
    import sqlite3

    from stablecore.migrations import SCHEMA_VERSION

    (tmp_path / "data").mkdir()
    db = sqlite3.connect(tmp_path / "data" / "stablecore.db")
    db.executescript(SCHEMA_0_1_0)
    db.close()
    store = Store(tmp_path / "data")
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    job = store.get_job("j_old")
    assert job.state == JobState.QUEUED and job.traceback is None
    store.claim([job.id], "w0")
    failed = store.finish(job.id, JobState.FAILED, error="E: x", traceback="Traceback ...")
    assert failed.traceback == store.get_job(job.id).traceback == "Traceback ..."
    store.close()
    assert Store(tmp_path / "data").migrate() == SCHEMA_VERSION  # opening again: nothing to do


def test_a_data_folder_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    from stablecore.errors import StoreError

    Store(tmp_path / "data").db.execute("PRAGMA user_version = 999")
    with pytest.raises(StoreError, match="newer stable-core"):
        Store(tmp_path / "data")


def test_queued_selects_what_idle_workers_run(store: Store) -> None:
    session = store.current_session()
    for _ in range(100):  # a long head of jobs no idle worker can take
        store.add_job(Job(new_id("j"), "isolated.job", {}, {}, session["id"], JobState.QUEUED))
    behind = make_job(store)
    assert behind.id not in [q.id for q in store.queued(72)]
    assert [q.id for q in store.queued(72, {"demo.job"})] == [behind.id]


def test_previews_of_finished_jobs_are_pruned(store: Store, tmp_path: Path) -> None:
    job = make_job(store)
    store.claim([job.id], "w0")
    files = []
    for i in range(2):
        path = tmp_path / f"p{i}.jpg"
        path.write_bytes(b"preview %d" % i)
        files.append(store.add_artifact(path, sha256_file(path), "preview", "image/jpeg", "jpg",
                                        "p.jpg", job_id=job.id))
    assert store.prune_previews(finished_before=1e12) == 0  # the job still runs
    store.finish(job.id, JobState.SUCCEEDED)
    finished = store.get_job(job.id).finished
    assert store.prune_previews(finished_before=finished - 1) == 0  # too recent
    assert store.prune_previews(finished_before=finished + 1) == 2
    for art in files:
        assert not store.artifact_file(art).exists()
        with pytest.raises(NotFound):
            store.get_artifact(art.id)
