"""`stable-core serve --shell`: the server on a thread, the shell in the foreground.

Everything written to standard error (uvicorn's log, worker processes' output, which they
inherit) goes through a pipe and is printed above the prompt, never through the line being
typed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from stablecore.cli.shell import Shell
from stablecore.client import Client
from stablecore.config import Settings

START_TIMEOUT_S = 60.0


@contextlib.contextmanager
def stderr_above_prompt() -> Iterator[None]:
    """Send file descriptor 2 (this process's and its children's) through a pipe whose lines
    are written to `sys.stdout` at the time: the prompt's patched stdout while a prompt is
    shown (the line goes above it), rich's while a progress bar runs."""
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    dim = sys.stdout.isatty()

    def pump() -> None:
        with os.fdopen(read_end, "r", errors="replace") as lines:
            for line in lines:
                text = f"\x1b[2m{line.rstrip()}\x1b[0m\n" if dim else line
                with contextlib.suppress(Exception):
                    sys.stdout.write(text)
                    sys.stdout.flush()

    thread = threading.Thread(target=pump, name="stderr-pump", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe closes once the workers, which hold it too, have exited
        os.close(saved)
        thread.join(1.0)


def serve_with_shell(app: Any, settings: Settings) -> None:
    """Start the server on a thread, wait until it answers, run the shell, stop the server."""
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning",
                            ws_max_size=16 * 2**20, ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    with stderr_above_prompt():
        thread = threading.Thread(target=server.run, name="server", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise SystemExit("the server did not start (its log is above)")
            time.sleep(0.05)
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.host, settings.host)
        host = f"[{host}]" if ":" in host else host
        try:
            with Client(f"http://{host}:{settings.port}", settings.token) as client:
                Shell(client).loop()
        finally:
            print("stopping the server ...", flush=True)
            server.should_exit = True
            thread.join(30)
