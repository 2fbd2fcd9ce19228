"""The worker protocol's messages and the worker state machine, without processes."""

from __future__ import annotations

import pytest

from stablecore import protocol
from stablecore.engine.link import WorkerState
from stablecore.engine.local import LocalLink
from stablecore.errors import Conflict, ProtocolError


def test_messages_round_trip_through_json_lines() -> None:
    run = protocol.Run(jobs=[protocol.Order(id="j_1", spec="a.b", params={"x": 1}, inputs={
        "image": protocol.FileRef(sha256="0" * 64, kind="image", size=3, id="a_1")})])
    (line,) = protocol.encode(run).splitlines(keepends=True)
    assert protocol.to_worker(line) == run
    blob = protocol.Blob.of("f" * 64, b"\x00\x01bytes")
    assert protocol.to_worker(protocol.encode(blob)).raw() == b"\x00\x01bytes"
    failed = protocol.Failed(id="j_1", error="E: x", traceback="Traceback ...")
    assert protocol.from_worker(protocol.encode(failed)) == failed


def test_bad_lines_and_other_versions_are_refused() -> None:
    with pytest.raises(ProtocolError, match="bad message from worker"):
        protocol.from_worker(b'{"t": "done", "id": 3}\n')
    with pytest.raises(ProtocolError, match="bad message from worker"):
        protocol.from_worker(b'{"t": "teleport"}\n')
    hello = protocol.Hello(version=protocol.VERSION + 1, pid=1, python="py", specs=[],
                           plugins=[])
    with pytest.raises(ProtocolError, match="install the same stable-core version"):
        protocol.check_hello(hello, "w0")


def test_worker_states_move_only_along_the_table() -> None:
    link = LocalLink("w0", "cpu")
    with pytest.raises(Conflict, match="down, it cannot become busy"):
        link.move(WorkerState.BUSY)
    for state in (WorkerState.STARTING, WorkerState.IDLE, WorkerState.BUSY, WorkerState.IDLE,
                  WorkerState.STOPPING, WorkerState.DOWN):
        link.move(state)
    assert link.state == WorkerState.DOWN


def test_a_worker_that_settled_starts_a_new_backoff() -> None:
    from stablecore.config import Settings
    from stablecore.engine.pool import SETTLED_S, Pool

    delays: list[float] = []
    pool = Pool(Settings(), dict, lambda *a: None, lambda *a: None, lambda coro: coro.close())
    link = LocalLink("w0", "cpu")
    for _ in range(5):  # dies at start-up again and again: the backoff grows
        delays.append(pool.restart_later(link))
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0]
    link.state = WorkerState.STARTING
    link.move(WorkerState.IDLE)
    pool.workers["w0"] = link
    pool.check_settled(link.idle_since + SETTLED_S / 2)
    assert pool.restart_later(link) == 8.0  # not idle long enough yet
    link.move(WorkerState.BUSY)
    link.move(WorkerState.IDLE)
    pool.check_settled(link.idle_since + SETTLED_S + 1)
    assert pool.restart_later(link) == 0.25  # up and idle a while: a fresh start


def test_a_cache_never_holds_more_than_its_budget() -> None:
    from stablecore.context import ModelCache

    cache = ModelCache(budget_mb=10)
    assert cache.get("small", lambda: "s", size_mb=4) == "s"
    assert cache.get("huge", lambda: "h", size_mb=50) == "h"  # the caller still gets it
    assert cache.used_mb <= 10 and "huge" not in cache.entries
