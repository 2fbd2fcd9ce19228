"""The web UI's API types are generated from the server's OpenAPI document, checked in as
web/openapi.json (and web/src/openapi.d.ts from it, by `npm run types`). These tests fail when
either is stale; refresh both with

    STABLECORE_UPDATE_OPENAPI=1 .venv/bin/pytest tests/test_openapi_types.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from stablecore.config import Settings
from stablecore.server.app import create_app

WEB = Path(__file__).resolve().parents[1] / "web"
DOCUMENT = WEB / "openapi.json"
GENERATOR = WEB / "node_modules" / ".bin" / "openapi-typescript"
UPDATE = os.environ.get("STABLECORE_UPDATE_OPENAPI") == "1"
HOW = "regenerate: STABLECORE_UPDATE_OPENAPI=1 .venv/bin/pytest tests/test_openapi_types.py"


def current_document() -> dict:
    """What the app documents now, with default settings (nothing here depends on them)."""
    return create_app(Settings()).openapi()


def test_checked_in_openapi_document_is_current() -> None:
    doc = current_document()
    if UPDATE:
        DOCUMENT.write_text(json.dumps(doc, indent=2) + "\n")
    assert DOCUMENT.is_file(), f"web/openapi.json is missing; {HOW}"
    assert json.loads(DOCUMENT.read_text()) == doc, f"web/openapi.json is stale; {HOW}"


@pytest.mark.skipif(not GENERATOR.is_file() or not shutil.which("node"),
                    reason="needs web/node_modules (npm ci in web/)")
def test_generated_types_match_the_document() -> None:
    script = "types" if UPDATE else "types:check"
    run = subprocess.run(["npm", "run", "--silent", script], cwd=WEB, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, f"web/src/openapi.d.ts is stale; {HOW}\n{run.stdout}{run.stderr}"
