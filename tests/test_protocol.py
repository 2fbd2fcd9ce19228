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
