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
