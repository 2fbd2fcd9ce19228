"""SSH backend: workers on another machine, each speaking the protocol over an SSH channel.

One SSH connection per node carries all of its workers (one channel each), the installer's
commands and file uploads; it is opened by us, so the node needs no open port and may sit
behind NAT. Host keys are checked against the server's own known_hosts file
(`data/known_hosts`): an unknown key is trusted only when the user confirmed its fingerprint
or asked to accept a new key, and a changed key is always refused.

A remote worker does not share our disk: it fetches inputs it lacks (`Need`/`Blob`) into the
node's blob cache and sends the files it writes as `Part`s, which `Receiver` puts in local
files before the engine sees the message naming them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shlex
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncssh

from stablecore import protocol
from stablecore.engine.link import OnExit, OnMessage, WorkerLink, WorkerState
from stablecore.engine.local import exit_cause
from stablecore.errors import InvalidParams, NodeError, ProtocolError
from stablecore.protocol import Blob, Done, Failed, FromWorker, OutputFile, Part, Progress, ToWorker

CONNECT_TIMEOUT_S = 20.0
KEEPALIVE_S = 15.0  # a silent connection is declared lost after 4 missed keepalives


@dataclass(frozen=True)
class Target:
    """Where a node is: `ssh://user@host[:port]`."""

    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, url: str) -> Target:
        try:  # urlsplit itself raises on an unbalanced "[" (an IPv6 literal)
            parts = urlsplit(url if "://" in url else f"ssh://{url}")
            port = parts.port or 22
        except ValueError:
            raise InvalidParams(f"{url!r} is not ssh://user@host[:port]", field="url") from None
        if parts.scheme != "ssh" or not parts.hostname or not parts.username or not port \
                or parts.path not in ("", "/") or parts.password:
            raise InvalidParams(f"{url!r} is not ssh://user@host[:port]", field="url")
        return cls(parts.username, parts.hostname, port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")

    @property
    def known_name(self) -> str:
        """The host's name in a known_hosts file."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


# --- host keys and connecting -------------------------------------------------------------------
def known_keys(known_hosts: Path, target: Target) -> list[asyncssh.SSHKey]:
    if not known_hosts.is_file():
        return []
    keys = asyncssh.read_known_hosts(str(known_hosts)).match(target.host, "", target.port)[0]
    return list(keys)


def forget_host_key(known_hosts: Path, target: Target) -> None:
    if known_hosts.is_file():
        kept = [line for line in known_hosts.read_text().splitlines()
                if line.split(" ", 1)[0] != target.known_name]
        known_hosts.write_text("".join(f"{line}\n" for line in kept))


def _fingerprint(text: str) -> str:
    return text if text.startswith("SHA256:") else f"SHA256:{text}"


async def trust_host_key(target: Target, known_hosts: Path, expected: str | None = None,
                         accept_new: bool = False) -> str:
    """The node's host key fingerprint, once it is trusted: already in `known_hosts` (and
    unchanged), or new and confirmed by `expected` or `accept_new` (then it is recorded)."""
    try:
        offered = await asyncio.wait_for(
            asyncssh.get_server_host_key(target.host, target.port), CONNECT_TIMEOUT_S)
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise NodeError(f"cannot reach {target.url}: {_reason(e)}", field="url") from None
    if offered is None:
        raise NodeError(f"{target.url} presented no host key", field="url")
    fingerprint = offered.get_fingerprint("sha256")
    known = known_keys(known_hosts, target)
    if known:
        if any(k.public_data == offered.public_data for k in known):
            return fingerprint
        same_type = [k for k in known if k.algorithm == offered.algorithm]
        if same_type or not await _matches_other_type(target, known):
            raise _changed(target, known, fingerprint, known_hosts)
        return known[0].get_fingerprint("sha256")  # it also has the key we know: fine
    if expected is not None and _fingerprint(expected) != fingerprint:
        raise NodeError(f"{target.url} offered host key {fingerprint}, not the {expected} you "
                        "gave: refusing to connect (someone may be in between)",
                        field="host_key", host_key=fingerprint)
    if expected is None and not accept_new:
        raise NodeError(f"{target.url} is not a known host; its host key is {fingerprint} "
                        f"({offered.get_algorithm()}). Check it on the machine (ssh-keygen -lf "
                        "/etc/ssh/ssh_host_*_key.pub) and pass --host-key "
                        f"{fingerprint}, or --accept-new-host-key", field="host_key",
                        host_key=fingerprint)
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    algorithm, blob = offered.export_public_key("openssh").decode().split()[:2]
    with known_hosts.open("a") as f:
        f.write(f"{target.known_name} {algorithm} {blob}\n")
    return fingerprint


async def _matches_other_type(target: Target, known: list[asyncssh.SSHKey]) -> bool:
    """Whether the node still holds one of the keys we know, of another type than it offered
    first (a server with several host keys)."""
    algs = [k.get_algorithm() for k in known]
    if "ssh-rsa" in algs:
        algs += ["rsa-sha2-512", "rsa-sha2-256"]
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(
            target.host, target.port, server_host_key_algs=algs), CONNECT_TIMEOUT_S)
    except (OSError, asyncssh.Error, TimeoutError):
        return False
    return key is not None and any(k.public_data == key.public_data for k in known)


def _changed(target: Target, known: list[asyncssh.SSHKey], offered: str,
             known_hosts: Path) -> NodeError:
    was = ", ".join(k.get_fingerprint("sha256") for k in known)
    return NodeError(f"the host key of {target.url} CHANGED: we know {was}, it offered "
                     f"{offered}. Refusing to connect: someone may be in between. If the "
                     "machine was really reinstalled, remove the node (`stable-core nodes "
                     f"remove`) or its line in {known_hosts}, then add it again",
                     field="host_key", host_key=offered)


async def connect(target: Target, known_hosts: Path, key_file: str | None
                  ) -> asyncssh.SSHClientConnection:
    """Open an SSH connection whose host key must be in `known_hosts`."""
    options: dict[str, Any] = {}
    if key_file:
        options.update(client_keys=[key_file], agent_path=None)
    try:
        return await asyncio.wait_for(asyncssh.connect(
            target.host, target.port, username=target.user, known_hosts=str(known_hosts),
            keepalive_interval=KEEPALIVE_S, keepalive_count_max=4, config=None,
            **options), CONNECT_TIMEOUT_S)
    except asyncssh.HostKeyNotVerifiable:
        raise _changed(target, known_keys(known_hosts, target), "another key",
                       known_hosts) from None
    except asyncssh.PermissionDenied:
        raise NodeError(f"{target.url} refused the login of {target.user!r} with "
                        f"{'the key ' + key_file if key_file else 'your default keys'}: add "
                        "its public key to ~/.ssh/authorized_keys there, or pass --key",
                        field="key") from None
    except (OSError, asyncssh.Error, TimeoutError) as e:
        raise NodeError(f"cannot connect to {target.url}: {_reason(e)}", field="url") from None
    except ValueError as e:  # asyncssh: an unreadable or encrypted key file
        raise NodeError(f"cannot use the key {key_file}: {e}", field="key") from None


def _reason(e: BaseException) -> str:
    return "timed out" if isinstance(e, TimeoutError) else (str(e) or type(e).__name__)


class SshNode:
    """The one connection to a node, shared by its workers; reopened when it was lost."""

    def __init__(self, name: str, target: Target, known_hosts: Path, key_file: str | None,
                 log: Callable[[str], None] = print) -> None:
        self.name, self.target, self.known_hosts, self.key_file = name, target, known_hosts, \
            key_file
        self.log = log
        self.conn: asyncssh.SSHClientConnection | None = None
        self.connects = 0
        self._lock = asyncio.Lock()

    async def connection(self) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self.conn is None or self.conn.is_closed():
                self.conn = await connect(self.target, self.known_hosts, self.key_file)
                self.connects += 1
                if self.connects > 1:
                    self.log(f"reconnected to {self.target.url}")
            return self.conn

    async def run(self, command: str, input: str | None = None, check: bool = True,
                  timeout: float = 600) -> asyncssh.SSHCompletedProcess:
        conn = await self.connection()
        result = await conn.run(command, input=input, check=False, timeout=timeout)
        if check and result.exit_status != 0:
            raise NodeError(f"on {self.name}: `{command[:80]}` failed "
                            f"({result.exit_status}): {str(result.stderr).strip()[-400:]}")
        return result

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


# --- files coming back --------------------------------------------------------------------------
class Receiver:
    """Puts the `Part`s of a worker's files into local files, and points the messages that
    name those files at them; an output that did not arrive whole fails its job."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}  # path on the worker -> our complete copy
        self._open: dict[str, tuple[Any, Any]] = {}  # path -> (file, sha256 so far)
        self.bytes = 0
        self._n = 0

    def part(self, msg: Part) -> None:
        raw = msg.raw()
        self.bytes += len(raw)
        if msg.offset == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._n += 1
            local = self.folder / f"in_{self._n}_{msg.sha256[:16]}"
            self._open[msg.path] = (local.open("wb"), hashlib.sha256())
        elif msg.path not in self._open:
            return  # its start was lost: the file stays missing and its job fails
        f, digest = self._open[msg.path]
        f.write(raw)
        digest.update(raw)
        if msg.offset + len(raw) >= msg.size:
            f.close()
            del self._open[msg.path]
            if digest.hexdigest() == msg.sha256:
                self.files[msg.path] = Path(f.name)
            else:
                Path(f.name).unlink(missing_ok=True)

    def rewrite(self, msg: FromWorker) -> FromWorker:
        """`Done` and `Progress` with local paths; a `Done` whose files are missing fails."""
        if isinstance(msg, Progress) and msg.preview is not None:
            local = self.files.pop(msg.preview.path, None)
            msg.preview = msg.preview.model_copy(update={"path": str(local)}) if local else None
        elif isinstance(msg, Done):
            missing = []

            def local(out: OutputFile) -> OutputFile:
                path = self.files.pop(out.path, None)
                if path is None:
                    missing.append(Path(out.path).name)
                return out.model_copy(update={"path": str(path)})

            outputs = {name: [local(o) for o in out] if isinstance(out, list) else local(out)
                       for name, out in msg.outputs.items()}
            if missing:
                return Failed(id=msg.id, error="output files did not arrive from the node: "
                              + ", ".join(missing))
            msg.outputs = outputs
        return msg

    def clear(self) -> None:
        for f, _ in self._open.values():
            f.close()
            Path(f.name).unlink(missing_ok=True)
        self._open.clear()
        for path in self.files.values():
            path.unlink(missing_ok=True)
        self.files.clear()


# --- the link -----------------------------------------------------------------------------------
@dataclass(eq=False)
class SshLink(WorkerLink):
    """A worker on a node: `python -m stablecore.worker` in the node's venv, on a channel."""

    node: SshNode | None = None
    command: list[str] = field(default_factory=list)  # argv on the node
    env: dict[str, str] = field(default_factory=dict)
    tmpdir: Path = Path("tmp")  # ours: files arriving from the worker
    proc: asyncssh.SSHClientProcess | None = None
    reader: asyncio.Task | None = None
    receiver: Receiver | None = None
    bytes_received: int = 0
    console: list[str] = field(default_factory=list)  # the worker's stderr, last lines
    tasks: set[asyncio.Task] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.shares_files = False

    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None:
        assert self.node is not None
        conn = await self.node.connection()  # raises NodeError: the pool tries again later
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        command = f"exec env {env} {shlex.join(self.command)}"
        self.proc = await conn.create_process(command, encoding=None)
        self.lost = False
        self.move(WorkerState.STARTING)
        self.pid, self.started_at = None, time.monotonic()
        self.last_seen, self.jobs, self.cache = self.started_at, [], []
        self.receiver = Receiver(self.tmpdir)
        self.reader = self._spawn(self._read(self.proc, on_message, on_exit))
        self._spawn(self._console(self.proc))

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _read(self, proc: asyncssh.SSHClientProcess, on_message: OnMessage,
                    on_exit: OnExit) -> None:
        cause = None
        receiver = self.receiver
        assert receiver is not None
        try:
            while line := await proc.stdout.readline():
                self.last_seen = time.monotonic()
                try:
                    msg = protocol.from_worker(line)
                    if isinstance(msg, Part):
                        receiver.part(msg)
                        self.bytes_received = receiver.bytes
                        continue
                    on_message(self, receiver.rewrite(msg))
                except ProtocolError as e:
                    cause = e.message
                    self.kill()
                    break
                except Exception:  # an engine bug must not stop us noticing the worker's end
                    traceback.print_exc()
        except (asyncssh.Error, OSError) as e:
            self.lost = True
            cause = f"connection to node lost: {_reason(e)}"
        cause = cause or await self._ended(proc)
        receiver.clear()
        on_exit(self, cause)

    async def _ended(self, proc: asyncssh.SSHClientProcess) -> str:
        """How the worker ended: its exit status or signal, or a lost connection."""
        with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
            await asyncio.wait_for(proc.wait_closed(), 10)
        if proc.exit_signal is not None:
            name = proc.exit_signal[0]
            return ("killed by SIGKILL (out of memory, or killed from outside)" if name == "KILL"
                    else f"killed by signal SIG{name}")
        if proc.exit_status is not None and proc.exit_status >= 0:
            return exit_cause(proc.exit_status)
        self.lost = True
        return f"connection to node {self.node.name if self.node else ''} lost"

    async def _console(self, proc: asyncssh.SSHClientProcess) -> None:
        with contextlib.suppress(asyncssh.Error, OSError):
            while line := await proc.stderr.readline():
                self.console.append(line.decode(errors="replace").rstrip())
                del self.console[:-200]

    def send(self, message: ToWorker) -> None:
        if self.proc is None or self.proc.stdin.is_closing():
            return
        if isinstance(message, Blob):
            data = message.data  # base64: 4 characters per 3 bytes, less the padding
            self.blob_bytes_sent += len(data) * 3 // 4 - data[-2:].count("=")
        self.proc.stdin.write(protocol.encode(message))

    def kill(self) -> None:
        """SIGKILL the worker's process group on the node (a channel's command leads its own
        session), then drop the channel; `on_exit` follows."""
        if self.proc is None:
            return
        self._spawn(self._kill(self.proc, self.pid))

    async def _kill(self, proc: asyncssh.SSHClientProcess, pid: int | None) -> None:
        conn = self.node.conn if self.node is not None else None
        if pid and conn is not None and not conn.is_closed():
            with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                await conn.run(f"kill -KILL -- -{pid} 2>/dev/null || kill -KILL {pid}",
                               timeout=10)
            with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                await asyncio.wait_for(proc.wait_closed(), 5)  # its exit signal comes back
        proc.close()

    async def stop(self, timeout: float = 3.0) -> None:
        """EOF on the worker's stdin (it exits); kill it past `timeout`."""
        proc = self.proc
        if proc is None or self.state == WorkerState.DOWN:
            return
        self.move(WorkerState.STOPPING)
        with contextlib.suppress(asyncssh.Error, OSError):
            proc.stdin.write_eof()
        try:
            await asyncio.wait_for(proc.wait_closed(), timeout)
        except (TimeoutError, asyncssh.Error, OSError):
            self.kill()
            proc.close()
        if self.reader is not None:
            await asyncio.shield(self.reader)

    def public(self) -> dict[str, Any]:
        return {**super().public(), "node": self.node.name if self.node else None,
                "bytes_received": self.bytes_received}
