"""Live events over WebSocket and SSE; a client that reconnects resumes without gaps."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from stablecore.client import AsyncClient, Client, parse_sse
from stablecore.testing import ServerProcess


async def collect(ws_url: str, count: int) -> list[dict]:
    # A short close timeout: the client leaves unread events behind and need not drain them.
    async with websockets.connect(ws_url, close_timeout=0.5) as ws:
        return [json.loads(await ws.recv()) for _ in range(count)]


def test_websocket_streams_a_job_in_order(stablecore_server: ServerProcess) -> None:
    async def scenario() -> list[dict]:
        async with AsyncClient(stablecore_server.url) as c:
            job = await c.submit("testing.sleep", {"seconds": 0.2, "steps": 4})
            events = []
            async for event in c.stream(since=0, job=job["id"]):
                events.append(event)
                if event["type"] == "job.succeeded":
                    return events
        return events

    events = asyncio.run(scenario())
    types = [e["type"] for e in events]
    assert types == ["job.queued", "job.started", *["job.progress"] * 4, "job.succeeded"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert [e["data"]["step"] for e in events if e["type"] == "job.progress"] == [1, 2, 3, 4]
    assert events[-1]["data"]["outputs"]["text"]["kind"] == "text"


def test_reconnecting_with_since_misses_nothing(stablecore_server: ServerProcess) -> None:
    url = stablecore_server.url
    with Client(url) as c:
        start = max([0, *[e["seq"] for e in c.events(c.run("testing.echo")["id"])]])
        session = c.create_session("resume")
        jobs = [c.submit("testing.echo", {"n": 2}, session=session["id"]) for _ in range(5)]
        for job in jobs:
            c.wait(job["id"])
    ws = "ws" + url.removeprefix("http") + f"/api/events?session={session['id']}"

    everything = asyncio.run(collect(f"{ws}&since={start}", 16))  # session.created + 5 * 3
    first = asyncio.run(collect(f"{ws}&since={start}", 6))  # the connection drops here
    rest = asyncio.run(collect(f"{ws}&since={first[-1]['seq']}", 10))
    assert [e["seq"] for e in first + rest] == [e["seq"] for e in everything]
    by_type = [e["type"] for e in everything]
    assert by_type.count("job.succeeded") == 5 and by_type.count("job.queued") == 5


def test_live_websocket_without_since_starts_now(stablecore_server: ServerProcess) -> None:
    async def scenario() -> dict:
        async with AsyncClient(stablecore_server.url) as c:
            stream = c.stream()
            first = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.3)  # connected and subscribed
            job = await c.submit("testing.echo", {"text": "now"})
            event = await asyncio.wait_for(first, 10)
            await stream.aclose()
            return {"job": job, "event": event}

    got = asyncio.run(scenario())
    assert got["event"]["type"] == "job.queued" and got["event"]["job_id"] == got["job"]["id"]


def test_sse_follows_a_job_and_resumes_from_last_event_id(
        stablecore_server: ServerProcess) -> None:
    with Client(stablecore_server.url) as c:
        job = c.submit("testing.sleep", {"seconds": 0.1, "steps": 3})
        events = list(c.events(job["id"]))
        assert events[0]["type"] == "job.queued" and events[-1]["type"] == "job.succeeded"
        middle = events[2]["seq"]
        with httpx.stream("GET", f"{stablecore_server.url}/api/jobs/{job['id']}/events",
                          headers={"Last-Event-ID": str(middle)}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            resumed = list(parse_sse(r.iter_lines()))
        assert [e["seq"] for e in resumed] == [e["seq"] for e in events[3:]]
        with httpx.stream("GET", f"{stablecore_server.url}/api/jobs/{job['id']}/events",
                          params={"since": events[-1]["seq"]}, timeout=5) as r:
            assert list(parse_sse(r.iter_lines())) == []  # finished job: nothing new, stream ends
        assert httpx.get(f"{stablecore_server.url}/api/jobs/j_missing/events").status_code == 404


def test_worker_up_events_are_recorded(stablecore_server: ServerProcess) -> None:
    ws = "ws" + stablecore_server.url.removeprefix("http") + "/api/events?since=0"
    first = asyncio.run(collect(ws, 1))[0]
    assert first["type"] == "worker.up" and first["data"]["worker"] == "w0"


@pytest.mark.parametrize("query", ["since=-1", "since=abc"])
def test_bad_since_is_refused(stablecore_server: ServerProcess, query: str) -> None:
    r = httpx.get(f"{stablecore_server.url}/api/jobs/j_x/events?{query}")
    assert r.status_code == 422
