"""The interactive shell in a real pseudo-terminal (pexpect), its screen rendered by a terminal
emulator (pyte), against a real server with the test plugins."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

pexpect = pytest.importorskip("pexpect")
pyte = pytest.importorskip("pyte")

from prompt_toolkit.completion import CompleteEvent  # noqa: E402
from prompt_toolkit.document import Document  # noqa: E402

from stablecore.cli.catalog import Catalog, coerce  # noqa: E402
from stablecore.cli.completion import ShellCompleter, split_line  # noqa: E402
from stablecore.cli.shell import COMMANDS  # noqa: E402
from stablecore.testing import ServerProcess, free_port, save_image  # noqa: E402

ROWS, COLS = 40, 120


class Terminal:
    """A program in a pty; what it prints goes through a VT100 emulator, so tests read the
    screen a person would see, not escape codes."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.screen = pyte.Screen(COLS, ROWS)
        self.stream = pyte.ByteStream(self.screen)
        self.child = pexpect.spawn(args[0], args[1:], cwd=str(cwd), env=env,
                                   dimensions=(ROWS, COLS))

    def text(self) -> str:
        return "\n".join(line.rstrip() for line in self.screen.display).rstrip()

    def pump(self, timeout: float = 0.05) -> None:
        with contextlib.suppress(pexpect.TIMEOUT):
            self.stream.feed(self.child.read_nonblocking(65536, timeout))

    def wait(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := re.search(pattern, self.text()):
                return found
            try:
                self.pump()
            except pexpect.EOF:
                break
        raise AssertionError(f"{pattern!r} not on the screen:\n{self.text()}")

    def line(self) -> str:
        """The row the cursor is on."""
        return self.screen.display[self.screen.cursor.y].rstrip()

    def wait_line(self, ending: str, timeout: float = 15.0) -> None:
        """Until the cursor's row ends with `ending` (completion is asynchronous)."""
        deadline = time.monotonic() + timeout
        while not self.line().endswith(ending):
            if time.monotonic() > deadline:
                raise AssertionError(f"the line is {self.line()!r}, not ...{ending!r}")
            self.pump()

    def send(self, keys: str, settle: float = 0.3) -> None:
        self.child.send(keys)
        end = time.monotonic() + settle
        while time.monotonic() < end:
            self.pump()

    def clear(self) -> None:
        """An empty screen and an empty prompt line (Ctrl-U, then Ctrl-L)."""
        self.send("\x15\x0c")

    def command(self, line: str) -> None:
        self.clear()
        self.send(line + "\r", settle=0.1)

    def close(self) -> None:
        if self.child.isalive():
            self.child.sendcontrol("d")
            self.child.expect(pexpect.EOF, timeout=30)
        self.child.close()


def shell_env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1", "COLUMNS": str(COLS),
            "XDG_STATE_HOME": str(tmp / "state"), "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def server(stablecore_server: ServerProcess) -> ServerProcess:
    return stablecore_server


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shellwork")
    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[:, :3] = (10, 200, 30)
    save_image(folder, pixels, "tiny_input.png")
    return folder


@pytest.fixture(scope="module")
def term(server: ServerProcess, work: Path) -> Iterator[Terminal]:
    terminal = Terminal([sys.executable, "-m", "stablecore", "shell", "--url", server.url],
                        work, shell_env(work))
    terminal.wait(r"sc>$")
    yield terminal
    terminal.close()


def completions(catalog: Catalog, text: str) -> list[str]:
    completer = ShellCompleter(COMMANDS, lambda: catalog, lambda: ["j_1", "j_2"])
    return [c.text for c in completer.get_completions(Document(text), CompleteEvent())]


def test_completion_from_the_live_catalog(server: ServerProcess, work: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with server.client() as c:
        catalog = Catalog(c.specs())
    assert completions(catalog, "ru") == ["run "]
    assert "testing.echo " in completions(catalog, "run testing.e")
    assert completions(catalog, "run testing.echo ") == ["text=", "n="]
    assert completions(catalog, "run testing.echo n=3 ") == ["text="]  # given ones go
    assert completions(catalog, "run testing.crash how=s") == ["sigkill ", "segv "]
    assert completions(catalog, "run testing.invert ") == ["image=", "mask="]
    assert completions(catalog, "run testing.invert -i ") == ["image=", "mask="]
    monkeypatch.chdir(work)
    assert completions(catalog, "run testing.invert image=tiny_") == ["input.png"]
    assert "steps=" in completions(catalog, "set st")
    assert completions(catalog, "show ") == ["j_1 ", "j_2 "]
    assert split_line('run testing.echo text="a b') == ["run", "testing.echo", "text=a b"]
    assert coerce({"type": "string"}, "1990") == "1990"
    assert coerce({"type": "integer"}, "7") == 7
    assert coerce(None, "[1, 2]") == [1, 2]


def test_tab_completes_in_a_terminal(term: Terminal) -> None:
    term.clear()
    term.send("run testing.ec\t")
    term.wait_line("sc> run testing.echo")
    term.send("\t")  # the menu of its params, with their schema
    term.wait(r"n=\s+integer = 1 \[1\.\.10\] - repeats")
    term.send("\x1b")
    term.clear()
    term.send("run testing.invert image=tiny\t")
    term.wait_line("image=tiny_input.png")


def test_run_shows_progress_and_outputs(term: Terminal, work: Path) -> None:
    term.command("run testing.sleep seconds=2 steps=20")
    term.wait(r"testing\.sleep running .*\d+%")
    term.wait(r"succeeded testing\.sleep j_\w+ in [\d.]+ s\n  text: \S+\.txt\n +slept 2\.0")
    term.command("run testing.invert image=tiny_input.png")
    found = term.wait(r"image: (\S+testing\.invert\.png)")
    with PIL.Image.open(work / found[1]) as image:
        assert np.asarray(image)[0, 0].tolist() == [245, 55, 225]
    term.command("open")
    term.wait(rf"{re.escape(str(work))}/\S+testing\.invert\.png \(no viewer here")


def test_errors_keep_the_shell_going(term: Terminal) -> None:
    term.command("run testing.echo n=99")
    term.wait(r"error: params\.n: 99 is greater than the maximum of 10")
    term.command("run testing.nope")
    term.wait(r"error: unknown job 'testing.nope'")
    term.command("frobnicate")
    term.wait(r"error: unknown command 'frobnicate'")
    term.command("show j_missing")
    term.wait(r"error: .*j_missing")
    term.command("set text=hi n=2")
    term.command("run testing.echo")
    term.wait(r"succeeded testing\.echo .*\n.*\n +hihi")
    term.command("retry")
    term.wait(r"succeeded testing\.echo .*\n.*\n +hihi")
    term.command("help testing.echo")
    term.wait(r"n\s+integer = 1 \[1\.\.10\] - repeats")


def test_ctrl_c_asks_to_cancel(term: Terminal) -> None:
    term.command("run testing.sleep seconds=30 steps=300")
    term.wait(r"testing\.sleep running")
    term.child.sendintr()
    term.wait(r"cancel j_\w+\? \[Y\]es")
    term.send("y\r")
    term.wait(r"cancelled testing\.sleep j_\w+")
    term.command("jobs")
    term.wait(r"testing\.sleep\s+cancelled")
    term.command("open")  # the newest job with a file output: the echo's text
    term.wait(r"testing\.echo\.txt \(no viewer here")


def test_history_persists(term: Terminal, work: Path) -> None:
    history = (work / "state" / "stable-core" / "shell_history").read_text()
    assert "run testing.echo n=99" in history


def test_serve_with_shell_prints_logs_above_the_prompt(tmp_path: Path) -> None:
    env = {**shell_env(tmp_path), "STABLECORE_DATA_DIR": str(tmp_path / "data"),
           "STABLECORE_WORKERS": "cpu", "STABLECORE_PORT": str(free_port())}
    term = Terminal([sys.executable, "-m", "stablecore", "serve", "--shell"], tmp_path, env)
    try:
        term.wait(r"sc>$", timeout=60)
        term.command("run testing.chatty lines=1 fail=false")
        screen = term.wait(r"succeeded testing\.chatty[^$]*\nsc>$").string
        assert "[w0] stdout line 0" in screen  # the worker's output, printed by the server
        term.send("exit\r")
        term.child.expect(pexpect.EOF, timeout=30)
    finally:
        term.child.close(force=True)
