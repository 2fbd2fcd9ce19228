"""A stable-core client on the standard library alone: Blender's Python has no httpx, so the
add-on cannot use `stablecore.client`. The same routes, the same error shape, SSE for events.

Every call blocks: the add-on makes them on its own threads, never on Blender's.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

FINAL_STATES = {"succeeded", "failed", "cancelled"}
RECONNECT_S = 60.0  # how long a job's event stream keeps trying to get back to the server


class ApiError(Exception):
    """A 4xx/5xx answer: `detail` is the server's message, `field` the bad field if any."""

    def __init__(self, status: int, detail: str, field: str | None = None) -> None:
        self.status, self.detail, self.field = status, detail, field
        super().__init__(f"{detail} (field {field})" if field else detail)


class Api:
    """The routes the add-on needs: catalog, upload, submit, follow, cancel, download."""

    def __init__(self, url: str, token: str = "", timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None, timeout: float | None = None) -> Any:
        """One call; the open response for event streams, else the body (JSON decoded)."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            response = urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raise _api_error(e) from None
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response
        with response:
            data = response.read()
        if response.headers.get("content-type", "").startswith("application/json"):
            return json.loads(data)
        return data

    def post_json(self, path: str, payload: Any) -> Any:
        return self.request("POST", path, json.dumps(payload).encode(), "application/json")

    def specs(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/specs")

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/api/health")

    def submit(self, spec: str, params: dict[str, Any], inputs: dict[str, Any],
               session: str | None = None) -> dict[str, Any]:
        return self.post_json("/api/jobs", {"spec": spec, "params": params, "inputs": inputs,
                                            "session": session, "priority": 0})

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/api/jobs/{job_id}/cancel")

    def upload(self, name: str, data: bytes) -> str:
        """Multipart upload of one file; its artifact id."""
        boundary = uuid.uuid4().hex
        safe = name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{safe}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        answer = self.request("POST", "/api/artifacts", body,
                              f"multipart/form-data; boundary={boundary}", timeout=300)
        return answer["id"]

    def download(self, artifact_id: str) -> bytes:
        return self.request("GET", f"/api/artifacts/{artifact_id}", timeout=300)

    def events(self, job_id: str, since: int = 0) -> Iterator[dict[str, Any]]:
        """The job's events (SSE) after `since` until it ends; a dropped connection is
        retried for up to RECONNECT_S seconds, resuming after the last event seen."""
        last, failing_since = since, None
        while True:
            try:
                with self.request("GET", f"/api/jobs/{job_id}/events?since={last}",
                                  timeout=3600) as stream:
                    failing_since = None
                    for event in parse_sse(stream):
                        if event["seq"] <= last:
                            continue
                        last = event["seq"]
                        yield event
                        if event["type"].removeprefix("job.") in FINAL_STATES:
                            return
                if self.job(job_id)["state"] in FINAL_STATES:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > RECONNECT_S:
                    raise ConnectionError(f"lost {self.url}: {e}") from None
            time.sleep(0.5)

    def wait(self, job_id: str, on_event: Callable[[dict[str, Any]], None],
             stop: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Follow a job to its end, telling `on_event` each event; the finished job."""
        for event in self.events(job_id):
            on_event(event)
            if stop():
                break
        return self.job(job_id)


def parse_sse(lines: Any) -> Iterator[dict[str, Any]]:
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(error.read() or b"{}")
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # a framework's validation list
        detail = "; ".join(str(d.get("msg", d)) for d in detail)
    return ApiError(error.code, str(detail or error.reason),
                    body.get("field") if isinstance(body, dict) else None)
