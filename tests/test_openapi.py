"""The OpenAPI document matches the API: one error shape, every error status documented, the
upload's body described, 405 for other methods; schemathesis checks it against a real server."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stablecore.testing import ServerProcess

ERROR_STATUSES = ("400", "404", "409", "413", "415", "422")
# Routes schemathesis leaves alone: installs and model pulls reach the network, removal and
# update change the environment, reload and rescan restart the workers (tested elsewhere).
EXCLUDED = (r"^/api/plugins/(install|reload|rescan|\{name\}(/update)?)$|^/api/models/pull$")
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,unsupported_method,"
          "allow_header_conformance")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("openapi") / "data") as s:
        yield s


@pytest.fixture(scope="module")
def doc(server: ServerProcess) -> dict:
    return httpx.get(server.url + "/openapi.json").json()


def operations(doc: dict) -> Iterator[tuple[str, str, dict]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield path, method, op


def test_every_route_documents_the_one_error_shape(doc: dict) -> None:
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert {"error", "detail"} <= set(schemas["ErrorBody"]["required"])
    for path, method, op in operations(doc):
        for status in ERROR_STATUSES:
            body = op["responses"][status]["content"]["application/json"]["schema"]
            assert body == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_the_upload_body_is_documented(doc: dict) -> None:
    body = doc["paths"]["/api/artifacts"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert body["required"] and form["required"] == ["file"]
    assert form["properties"]["file"] == {"type": "string", "format": "binary",
                                          "description": form["properties"]["file"]["description"]}


def test_errors_have_that_shape_at_run_time(server: ServerProcess) -> None:
    def check(r: httpx.Response, status: int, error: str, field: str | None = None) -> None:
        assert r.status_code == status, r.text
        body = r.json()
        assert body["error"] == error and isinstance(body["detail"], str)
        assert body.get("field") == field

    url = server.url
    check(httpx.get(url + "/api/jobs", params={"limit": 0}), 422, "InvalidParams", "limit")
    check(httpx.post(url + "/api/jobs", json={"params": {}}), 422, "InvalidParams", "spec")
    check(httpx.post(url + "/api/jobs", content=b"{", headers={"content-type": "application/json"}),
          422, "InvalidParams", "1")
    check(httpx.get(url + "/api/jobs/j_nope"), 404, "NotFound")
    check(httpx.get(url + "/api/nope"), 404, "NotFound")  # never the web UI's index.html


@pytest.mark.parametrize("method, path, allow", [
    ("OPTIONS", "/api/jobs", "GET, POST"),
    ("DELETE", "/api/jobs", "GET, POST"),
    ("TRACE", "/api/health", "GET"),
    ("PUT", "/api/jobs/j_x", "GET, PATCH"),
    ("GET", "/api/plugins/reload", "POST"),
    ("POST", "/api/artifacts/a_x", "GET"),
])
def test_other_methods_get_405_with_allow(server: ServerProcess, method: str, path: str,
                                          allow: str) -> None:
    r = httpx.request(method, server.url + path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert r.json()["error"] == "MethodNotAllowed" and method in r.json()["detail"]


def test_schemathesis_finds_the_api_as_documented(server: ServerProcess, tmp_path: Path) -> None:
    """Bounded: 25 examples per operation, about 10 s on two cores."""
    result = subprocess.run(
        [sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
         "run", server.url + "/openapi.json", "--checks", CHECKS, "--max-examples", "25",
         "--exclude-path-regex", EXCLUDED, "--workers", "1", "--no-color",
         "--generation-database", "none", "--request-timeout", "30"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested and int(tested.group(1)) >= 15, result.stdout[-3000:]  # it ran them all
