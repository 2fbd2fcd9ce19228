"""Python SDK: sync `Client` and async `AsyncClient` over HTTP, events over SSE/WebSocket.

The only thing clients (CLI, shell, bridges, tests) use to talk to a server. Following a job
or the event stream survives a dropped connection and a server restart: the client reconnects
with backoff and resumes after the last `seq` it saw, for up to `reconnect_s` seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import websockets

from stablecore import credentials
from stablecore.workflow import Workflow

DEFAULT_URL = "http://127.0.0.1:5000"
FINAL_STATES = {"succeeded", "failed", "cancelled"}
FINAL_EVENTS = {f"job.{s}" for s in FINAL_STATES}
FINAL_WORKFLOW_EVENTS = {f"workflow.{s}" for s in FINAL_STATES}
RECONNECT_S = 120.0  # how long a stream keeps trying to get back to a server that went away


class ApiError(Exception):
    """A 4xx/5xx answer; `detail` is the server's message, `field` the bad field if any."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        if isinstance(body, dict):
            detail = body.get("detail", body)
            self.field = body.get("field")
        else:
            detail, self.field = body, None
        if isinstance(detail, list):  # FastAPI's request validation format
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                               for d in detail)
        self.detail = str(detail)
        super().__init__(f"{status}: {self.detail}")


def _check(response: httpx.Response) -> Any:
    if response.is_error:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        raise ApiError(response.status_code, body)
    return response.json() if response.headers.get("content-type", "").startswith(
        "application/json") else response


def retryable(error: BaseException) -> bool:
    """A dropped connection or a server that is (re)starting: worth reconnecting for."""
    if isinstance(error, ApiError):
        return error.status in (502, 503, 504)
    if isinstance(error, websockets.InvalidStatus):
        return error.response.status_code in (502, 503, 504)
    return isinstance(error, httpx.NetworkError | httpx.TimeoutException
                      | httpx.RemoteProtocolError | websockets.ConnectionClosed
                      | websockets.InvalidMessage | OSError)  # InvalidMessage: cut mid-handshake


class Backoff:
    """When to try again after a dropped stream: waits that double from `first` up to `cap`,
    given up `total` seconds after an outage began. `ok()` after any success ends the outage."""

    def __init__(self, total: float, first: float = 0.1, cap: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.first, self.cap, self.clock = total, first, cap, clock
        self.delay, self.tries = first, 0  # tries in the current outage
        self.since: float | None = None  # when it began

    def ok(self) -> None:
        self.delay, self.since, self.tries = self.first, None, 0

    def next(self, error: BaseException) -> float:
        """Seconds to wait before the next try; re-raises `error` when it is not worth
        retrying or the outage has lasted `total` seconds."""
        now = self.clock()
        if self.since is None:
            self.since = now
        self.tries += 1
        left = self.since + self.total - now
        if not retryable(error) or left <= 0:
            raise error
        delay, self.delay = min(self.delay, left), min(self.delay * 2, self.cap)
        return delay


def _lost(error: BaseException, last: int) -> str:
    detail = str(error).strip() or type(error).__name__
    return f"lost the server ({detail}); reconnecting, resuming after event {last}"


def _where(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The server and token: given, else STABLECORE_URL / STABLECORE_TOKEN, else what
    `stable-core login` kept (its server is the default), else the local server."""
    url = (url or os.environ.get("STABLECORE_URL") or credentials.default_url()
           or DEFAULT_URL).rstrip("/")
    return url, token or os.environ.get("STABLECORE_TOKEN") or credentials.token_for(url)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _job_body(spec: str, params: dict | None, inputs: dict | None, session: str | None,
              priority: int) -> dict[str, Any]:
    return {"spec": spec, "params": params or {}, "inputs": inputs or {}, "session": session,
            "priority": priority}


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


class Client:
    """Blocking client. `Client()` reads STABLECORE_URL and STABLECORE_TOKEN if not given."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 60.0, reconnect_s: float = RECONNECT_S) -> None:
        self.url, self.token = _where(url, token)
        self.reconnect_s = reconnect_s
        self.http = httpx.Client(base_url=self.url, headers=_headers(self.token), timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        return _check(self.http.get(path, params={k: v for k, v in params.items()
                                                  if v is not None}))

    def health(self) -> dict[str, Any]:
        return self.get("/api/health")

    def specs(self) -> list[dict[str, Any]]:
        return self.get("/api/specs")

    def plugins(self) -> list[dict[str, Any]]:
        return self.get("/api/plugins")

    def workers(self) -> list[dict[str, Any]]:
        return self.get("/api/workers")

    def submit(self, spec: str, params: dict | None = None, inputs: dict | None = None,
               session: str | None = None, priority: int = 0) -> dict[str, Any]:
        return _check(self.http.post("/api/jobs",
                                     json=_job_body(spec, params, inputs, session, priority)))

    def submit_many(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Queue several jobs (dicts with spec, params, inputs, session, priority) in one
        request and one transaction: all are accepted, or none (the error names the index)."""
        return _check(self.http.post("/api/jobs", json=jobs))

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/api/jobs/{job_id}")

    def jobs(self, state: str | None = None, session: str | None = None, limit: int = 50,
             offset: int = 0) -> dict[str, Any]:
        return self.get("/api/jobs", state=state, session=session, limit=limit, offset=offset)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return _check(self.http.post(f"/api/jobs/{job_id}/cancel"))

    # users and tokens
    def me(self) -> dict[str, Any]:
        """Who this client is signed in as: name, role, and how."""
        return self.get("/api/me")

    def create_token(self, name: str = "", expires: str | None = None) -> dict[str, Any]:
        """A new API token of this client's user; `token` in the answer is shown only once."""
        return _check(self.http.post("/api/tokens", json={"name": name, "expires": expires}))

    def tokens(self) -> list[dict[str, Any]]:
        return self.get("/api/tokens")

    def revoke_token(self, token_id: str) -> dict[str, Any]:
        return _check(self.http.delete(f"/api/tokens/{token_id}"))

    def users(self) -> list[dict[str, Any]]:
        return self.get("/api/users")

    def add_user(self, name: str, password: str, role: str | None = None) -> dict[str, Any]:
        return _check(self.http.post("/api/users", json={"name": name, "password": password,
                                                         "role": role}))

    def change_user(self, name: str, role: str | None = None,
                    password: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in (("role", role), ("password", password)) if v is not None}
        return _check(self.http.patch(f"/api/users/{name}", json=body))

    def remove_user(self, name: str) -> dict[str, Any]:
        return _check(self.http.delete(f"/api/users/{name}"))

    def sessions(self) -> list[dict[str, Any]]:
        return self.get("/api/sessions")

    def create_session(self, name: str | None = None) -> dict[str, Any]:
        return _check(self.http.post("/api/sessions", json={"name": name}))

    def upload(self, path: Path, session: str | None = None) -> dict[str, Any]:
        with Path(path).open("rb") as f:
            data = {"session": session} if session else None
            return _check(self.http.post("/api/artifacts", files={"file": (Path(path).name, f)},
                                         data=data))

    def download(self, artifact_id: str, dest: Path) -> Path:
        """Save an artifact; `dest` is a file path, or a folder to keep the server's name."""
        with self.http.stream("GET", f"/api/artifacts/{artifact_id}") as r:
            if r.is_error:
                r.read()
                _check(r)
            if dest.is_dir():
                name = r.headers.get("content-disposition", "").rpartition("filename=")[2]
                dest = dest / (name.strip('"') or artifact_id)
            with dest.open("wb") as f:
                for chunk in r.iter_bytes():
                    f.write(chunk)
        return dest

    def events(self, job_id: str, since: int = 0,
               on_reconnect: Callable[[str], None] | None = None) -> Iterator[dict[str, Any]]:
        """A job's events over SSE, after `since` (0: from its start) until it ends.

        A dropped connection or a restarting server is retried with backoff, resuming after
        the last `seq` seen, so no event is lost or repeated; `on_reconnect` hears of each
        outage. After `reconnect_s` seconds of failures the error surfaces.
        """
        yield from self._follow(f"/api/jobs/{job_id}/events", FINAL_EVENTS,
                                lambda: self.job(job_id)["state"] in FINAL_STATES,
                                since, on_reconnect)

    def workflow_events(self, workflow_id: str, since: int = 0,
                        on_reconnect: Callable[[str], None] | None = None,
                        ) -> Iterator[dict[str, Any]]:
        """Every event of a workflow's nodes on one stream, until the run ends."""
        yield from self._follow(f"/api/workflows/{workflow_id}/events", FINAL_WORKFLOW_EVENTS,
                                lambda: self.workflow(workflow_id)["state"] != "running",
                                since, on_reconnect)

    def _follow(self, path: str, finals: set[str], ended: Callable[[], bool], since: int,
                on_reconnect: Callable[[str], None] | None) -> Iterator[dict[str, Any]]:
        last, backoff = since, Backoff(self.reconnect_s)
        while True:
            try:
                with self.http.stream("GET", path, params={"since": last},
                                      timeout=httpx.Timeout(10.0, read=None)) as r:
                    if r.is_error:
                        r.read()
                        _check(r)
                    backoff.ok()
                    for event in parse_sse(r.iter_lines()):
                        if event["seq"] <= last:
                            continue
                        last = event["seq"]
                        yield event
                        if event["type"] in finals:
                            return
                # The server ended the stream without the end: it has ended before `since`,
                # or the server is shutting down.
                if ended():
                    return
                raise httpx.RemoteProtocolError("event stream closed before the end")
            except Exception as e:
                delay = backoff.next(e)
                if on_reconnect is not None and backoff.tries == 1:
                    on_reconnect(_lost(e, last))
                time.sleep(delay)

    def wait(self, job_id: str, on_event: Callable[[dict], None] | None = None,
             on_reconnect: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Follow a job's events until it ends, across reconnects; return the finished job."""
        for event in self.events(job_id, on_reconnect=on_reconnect):
            if on_event is not None:
                on_event(event)
        return self._retrying(lambda: self.job(job_id))

    def _retrying(self, call: Callable[[], Any]) -> Any:
        backoff = Backoff(self.reconnect_s)
        while True:
            try:
                return call()
            except Exception as e:
                time.sleep(backoff.next(e))

    def workflow(self, workflow_id: str) -> dict[str, Any]:
        return self.get(f"/api/workflows/{workflow_id}")

    def submit_workflow(self, graph: Workflow | dict[str, Any], session: str | None = None,
                        priority: int = 0) -> dict[str, Any]:
        """Start a graph (a `Workflow` or its JSON); a bad one raises ApiError naming the
        node and field, and nothing runs."""
        doc = graph.to_dict(self.specs()) if isinstance(graph, Workflow) else graph
        return _check(self.http.post("/api/workflows",
                                     json={**doc, "session": session, "priority": priority}))

    def cancel_workflow(self, workflow_id: str) -> dict[str, Any]:
        return _check(self.http.post(f"/api/workflows/{workflow_id}/cancel"))

    def save_workflow(self, name: str, graph: Workflow | dict[str, Any],
                      expose: dict[str, Any] | None = None, description: str = "",
                      ) -> dict[str, Any]:
        """Keep a graph as the job `workflow.<name>`, exposing `{"params": {"size":
        "node.param"}, "inputs": {...}, "outputs": {...}}`; returns its catalog entry."""
        doc = graph.to_dict(self.specs()) if isinstance(graph, Workflow) else graph
        return _check(self.http.post("/api/workflows/saved", json={
            "name": name, "graph": doc, "expose": expose or {}, "description": description}))

    def run_workflow(self, graph: Workflow | dict[str, Any], on_event: Callable[[dict], None]
                     | None = None, **kw: Any) -> dict[str, Any]:
        """Start a graph and wait for it; returns the run with every node's outputs."""
        run = self.submit_workflow(graph, **kw)
        for event in self.workflow_events(run["id"]):
            if on_event is not None:
                on_event(event)
        return self._retrying(lambda: self.workflow(run["id"]))

    def run(self, spec: str, params: dict | None = None, inputs: dict | None = None,
            **kw: Any) -> dict[str, Any]:
        """Submit and wait. Inputs may be artifact ids or local paths (uploaded first), or
        lists of them for list inputs."""
        def ref(value: str | Path) -> str:
            return value if isinstance(value, str) else self.upload(Path(value))["id"]

        ids = {k: [ref(x) for x in v] if isinstance(v, list) else ref(v)
               for k, v in (inputs or {}).items()}
        return self.wait(self.submit(spec, params, ids, **kw)["id"])


class AsyncClient:
    """The same calls for asyncio code, plus `stream()`: all events over the WebSocket."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = 60.0, reconnect_s: float = RECONNECT_S) -> None:
        self.url, self.token = _where(url, token)
        self.reconnect_s = reconnect_s
        self.http = httpx.AsyncClient(base_url=self.url, headers=_headers(self.token),
                                      timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get(self, path: str, **params: Any) -> Any:
        return _check(await self.http.get(path, params={k: v for k, v in params.items()
                                                        if v is not None}))

    async def specs(self) -> list[dict[str, Any]]:
        return await self.get("/api/specs")

    async def submit(self, spec: str, params: dict | None = None, inputs: dict | None = None,
                     session: str | None = None, priority: int = 0) -> dict[str, Any]:
        return _check(await self.http.post(
            "/api/jobs", json=_job_body(spec, params, inputs, session, priority)))

    async def submit_many(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _check(await self.http.post("/api/jobs", json=jobs))

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.get(f"/api/jobs/{job_id}")

    async def cancel(self, job_id: str) -> dict[str, Any]:
        return _check(await self.http.post(f"/api/jobs/{job_id}/cancel"))

    async def upload(self, path: Path, session: str | None = None) -> dict[str, Any]:
        data = {"session": session} if session else None
        with Path(path).open("rb") as f:
            return _check(await self.http.post(
                "/api/artifacts", files={"file": (Path(path).name, f)}, data=data))

    async def stream(self, since: int | None = None, job: str | None = None,
                     session: str | None = None,
                     on_reconnect: Callable[[str], None] | None = None,
                     ) -> AsyncIterator[dict[str, Any]]:
        """Events over the WebSocket, after `since` (None: from now on), never ending.

        A dropped connection or a restarting server is retried with backoff, resuming after
        the last `seq` seen (with `since=None` and no event yet, from the reconnect on);
        after `reconnect_s` seconds of failures the error surfaces.
        """
        last, backoff = since, Backoff(self.reconnect_s)
        while True:
            query = "&".join(f"{k}={v}" for k, v in
                             (("since", last), ("job", job), ("session", session))
                             if v is not None)
            ws_url = ("ws" + self.url.removeprefix("http") + "/api/events"
                      + (f"?{query}" * bool(query)))
            try:
                async with websockets.connect(ws_url, additional_headers=_headers(self.token),
                                              max_size=None) as ws:
                    backoff.ok()
                    async for message in ws:
                        event = json.loads(message)
                        if last is not None and event["seq"] <= last:
                            continue
                        last = event["seq"]
                        yield event
                raise websockets.ConnectionClosedOK(None, None)  # the server closed: go back
            except Exception as e:
                delay = backoff.next(e)
                if on_reconnect is not None and backoff.tries == 1:
                    on_reconnect(_lost(e, last or 0))
                await asyncio.sleep(delay)

    async def wait(self, job_id: str, on_event: Callable[[dict], None] | None = None,
                   on_reconnect: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Follow a job's events until it ends, across reconnects; return the finished job."""
        stream = self.stream(since=0, job=job_id, on_reconnect=on_reconnect)
        try:
            async for event in stream:
                if on_event is not None:
                    on_event(event)
                if event["type"] in FINAL_EVENTS:
                    break
        finally:
            await stream.aclose()
        backoff = Backoff(self.reconnect_s)
        while True:
            try:
                return await self.job(job_id)
            except Exception as e:
                await asyncio.sleep(backoff.next(e))
