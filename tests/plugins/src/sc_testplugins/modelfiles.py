"""A plugin that declares a model file; the tests point its URL at a local HTTP server."""

from __future__ import annotations

import hashlib
import os

from stablecore import Context, ModelFile, Text, job

# The test sets these before starting the server; the defaults name a port nobody serves.
TINY = ModelFile(
    url=os.environ.get("STABLECORE_TEST_MODEL_URL", "http://127.0.0.1:9/tiny.bin"),
    sha256=os.environ.get("STABLECORE_TEST_MODEL_SHA256", "0" * 64),
    size=int(os.environ.get("STABLECORE_TEST_MODEL_SIZE", "0")) or None,
    licence="CC0-1.0",
)
MODEL_FILES = [TINY]


@job(description="Read the declared model file: its size and sha256.")
def read(ctx: Context) -> Text:
    data = ctx.model_path(TINY).read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}"
