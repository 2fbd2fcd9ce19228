"""Fair share: with several users queuing at one priority, the scheduler takes turns between
them instead of running one user's whole backlog first. The scheduler step by step, then
two users with 200 jobs each through a real server."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import httpx

from stablecore.engine.scheduler import WorkerView, fair_share, plan
from stablecore.store import QueuedJob, Store
from stablecore.testing import ServerProcess
from stablecore.users import Users


def queue_of(owner: str, count: int, first_seq: int, priority: int = 0) -> list[QueuedJob]:
    return [QueuedJob(f"{owner}{i}", "p.a", priority=priority, owner=owner, seq=first_seq + i)
            for i in range(count)]


def drain(queue: list[QueuedJob], workers: int = 1) -> list[str]:
    """Run `queue` to its end the way the engine does: each time a worker is free, the store's
    view of the queue (with each owner's running count and latest start) goes to `plan`."""
    started: dict[str | None, float] = {}
    order, clock = [], 0.0
    left = list(queue)
    while left:
        for job in left:
            job.owner_running, job.owner_started = 0, started.get(job.owner, 0.0)
        for _, jobs in plan(left, [WorkerView(f"w{i}", {"p.a"}) for i in range(workers)], {}):
            for job in jobs:
                clock += 1
                started[job.owner] = clock
                order.append(job.owner)
                left.remove(job)
    return order


def test_two_users_take_turns_on_one_worker() -> None:
    queue = queue_of("alice", 200, 1) + queue_of("bob", 200, 201)  # alice queued first
    order = drain(queue)
    first = Counter(order[:200])
    assert first == {"alice": 100, "bob": 100}
    assert order[:4] == ["alice", "bob", "alice", "bob"]
    # without fair share (one owner's view of the same queue) bob would wait for all 200
    assert Counter(o.owner for o in queue[:200]) == {"alice": 200}


def test_a_late_user_is_served_next_not_after_the_backlog() -> None:
    queue = queue_of("alice", 50, 1) + queue_of("bob", 3, 51)
    for job in queue:  # alice has been running jobs; bob never has
        job.owner_started = 1000.0 if job.owner == "alice" else 0.0
    assert [j.owner for j in fair_share(queue)][:6] == ["bob", "alice", "bob", "alice", "bob",
                                                        "alice"]


def test_fewest_running_goes_first_and_priority_still_rules() -> None:
    queue = queue_of("alice", 4, 1) + queue_of("bob", 4, 5)
    for job in queue:
        job.owner_running = 2 if job.owner == "alice" else 0  # alice holds two workers
    assert [j.owner for j in fair_share(queue)][:4] == ["bob", "bob", "alice", "bob"]
    urgent = queue_of("carol", 2, 100, priority=5)
    assert [j.owner for j in fair_share(queue + urgent)][:2] == ["carol", "carol"]


def test_one_owner_keeps_the_queue_as_it_is() -> None:
    queue = queue_of("alice", 5, 1)
    assert list(fair_share(queue)) == queue


def test_the_store_gives_each_owner_its_head_and_share(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    try:
        store.db.executescript(
            "INSERT INTO sessions (id, name, created) VALUES ('s', 's', 0);"
            + "".join(f"INSERT INTO jobs (id, spec, params, inputs, session_id, owner, state,"
                      f" created) VALUES ('{o}{i}', 'p.a', '{{}}', '{{}}', 's', '{o}',"
                      f" 'queued', 0);" for o in ("a", "b") for i in range(100))
            + "UPDATE jobs SET state = 'running', started = 5 WHERE id = 'a0';")
        head = store.queued(10)
        assert Counter(j.owner for j in head) == {"a": 16, "b": 16}  # at least 16 each
        a, b = (next(j for j in head if j.owner == o) for o in ("a", "b"))
        assert (a.owner_running, a.owner_started) == (1, 5.0)
        assert (b.owner_running, b.owner_started) == (0, 0.0)
        assert [j.id for j in store.queued(3, {"p.other"})] == []
    finally:
        store.close()


def test_two_users_with_200_jobs_each_both_progress(tmp_path: Path) -> None:
    """alice queues 200 jobs, then bob 200, while alice's first job holds the one worker.
    Of the first 200 to start after it, each user gets half."""
    data = tmp_path / "data"
    store = Store(data)
    users = Users(store)
    users.add("root", "root-password")
    for name in ("alice", "bob"):
        users.add(name, f"{name}-password", "user")
    store.close()
    with ServerProcess(data) as s:
        http = {}
        for name in ("root", "alice", "bob"):
            r = httpx.post(s.url + "/api/tokens", auth=(name, f"{name}-password"))
            http[name] = httpx.Client(base_url=s.url, timeout=60,
                                      headers={"Authorization": f"Bearer {r.json()['token']}"})
        blocker = http["alice"].post("/api/jobs", json={"spec": "testing.sleep",
                                                        "params": {"seconds": 2}}).json()
        for name in ("alice", "bob"):
            r = http[name].post("/api/jobs", json=[{"spec": "testing.noop"}] * 200)
            assert r.status_code == 201, r.text
        deadline = time.monotonic() + 90
        while http["root"].get("/api/jobs", params={"state": "queued",
                                                    "limit": 1}).json()["total"]:
            assert time.monotonic() < deadline, "the queue did not drain"
            time.sleep(0.2)
        time.sleep(0.5)
        jobs = http["root"].get("/api/jobs", params={"limit": 1000}).json()["jobs"]
        owners = {name: http[name].get("/api/me").json()["id"] for name in ("alice", "bob")}
        for c in http.values():
            c.close()
    noops = sorted((j for j in jobs if j["id"] != blocker["id"]), key=lambda j: j["started"])
    assert len(noops) == 400 and all(j["state"] == "succeeded" for j in noops)
    name = {v: k for k, v in owners.items()}
    first = Counter(name[j["owner"]] for j in noops[:200])
    half = Counter(name[j["owner"]] for j in noops[:100])
    print(f"\nfair share, first 200 of 400 to start: {dict(first)}; first 100: {dict(half)}")
    assert abs(first["alice"] - first["bob"]) <= 2, first
    assert min(half.values()) >= 48, half
