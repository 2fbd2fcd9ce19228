"""The worker protocol: the typed messages between the engine and a worker, as JSON lines.

One protocol for every link (a local pipe today, an SSH channel tomorrow). A worker's first
message is `Hello` with `VERSION`; the engine refuses any other version with a clear error.
Files travel as `FileRef`s named by sha256: a worker that lacks a blob asks for it (`Need`)
and keeps what it received in a content-addressed cache, so a blob crosses a link once. On
one machine the ref also carries the file's path, and nothing is copied. A worker started
with `--send-outputs` (over a link that does not share our disk) sends each file it writes
as `Part`s before the message that names it; the link puts the bytes in a local file and
rewrites the `OutputFile.path` before the engine sees it.

Bump VERSION whenever a message changes shape.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from stablecore.errors import ProtocolError

VERSION = 3
PART_BYTES = 4 * 2**20  # raw bytes per Part: a line stays small whatever the file


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRef(Message):
    """An input artifact as a worker sees it; `path` only where the worker shares our disk."""

    sha256: str
    kind: str
    size: int
    id: str = ""  # the artifact id and name, for error messages that show no server paths
    name: str = ""
    path: str | None = None


class OutputFile(Message):
    """A file a worker wrote (an output or a preview); JSON outputs also carry their value."""

    path: str
    kind: str
    mime: str
    ext: str
    sha256: str
    size: int = 0
    meta: dict[str, Any] = Field(default_factory=dict)
    value: Any = None


class Order(Message):
    """One job to run: the spec, checked params, and its inputs by name."""

    id: str
    spec: str
    params: dict[str, Any]
    inputs: dict[str, FileRef | list[FileRef]] = Field(default_factory=dict)


# --- engine -> worker ---------------------------------------------------------------------------
class Run(Message):
    """Run these jobs, as one batch when there are several (same spec and batch key)."""

    t: Literal["run"] = "run"
    jobs: list[Order]


class Cancel(Message):
    t: Literal["cancel"] = "cancel"
    id: str


class Blob(Message):
    """The bytes of a blob a worker asked for; `error` when the engine cannot send them."""

    t: Literal["blob"] = "blob"
    sha256: str
    data: str = ""  # base64
    error: str | None = None

    @classmethod
    def of(cls, sha256: str, raw: bytes) -> Blob:
        return cls(sha256=sha256, data=base64.b64encode(raw).decode("ascii"))

    def raw(self) -> bytes:
        return base64.b64decode(self.data)


# --- worker -> engine ---------------------------------------------------------------------------
class Hello(Message):
    t: Literal["hello"] = "hello"
    version: int
    pid: int
    python: str
    specs: list[dict[str, Any]]
    plugins: list[dict[str, Any]]


class Idle(Message):
    """The worker waits for work; its cache and counters as of now."""

    t: Literal["idle"] = "idle"
    cache: list[dict[str, Any]]
    loads: int = 0
    hits: int = 0
    decoded_hits: int = 0
    jobs_done: int = 0
    rss_mb: float = 0.0


class Progress(Message):
    t: Literal["progress"] = "progress"
    ids: list[str]
    step: int
    total: int
    preview: OutputFile | None = None


class Log(Message):
    """A log line of running jobs: `ctx.log` records, or what the plugin printed (`stream`)."""

    t: Literal["log"] = "log"
    ids: list[str]
    level: str
    msg: str
    stream: Literal["stdout", "stderr"] | None = None


class Done(Message):
    t: Literal["done"] = "done"
    id: str
    outputs: dict[str, OutputFile | list[OutputFile]]
    params: dict[str, Any] | None = None


class Failed(Message):
    t: Literal["failed"] = "failed"
    id: str
    error: str
    traceback: str | None = None


class Cancelled(Message):
    t: Literal["cancelled"] = "cancelled"
    id: str


class Need(Message):
    """The worker lacks this blob; the engine answers with `Blob`."""

    t: Literal["need"] = "need"
    sha256: str


class Part(Message):
    """A piece of a file the worker wrote, named by its path on the worker; parts arrive in
    order, before the `Done` or `Progress` that names the file."""

    t: Literal["part"] = "part"
    path: str
    sha256: str
    size: int  # the whole file's
    offset: int
    data: str = ""  # base64

    @classmethod
    def of(cls, out: OutputFile, size: int, offset: int, raw: bytes) -> Part:
        return cls(path=out.path, sha256=out.sha256, size=size, offset=offset,
                   data=base64.b64encode(raw).decode("ascii"))

    def raw(self) -> bytes:
        return base64.b64decode(self.data)


class Heartbeat(Message):
    t: Literal["heartbeat"] = "heartbeat"


ToWorker = Annotated[Run | Cancel | Blob, Field(discriminator="t")]
FromWorker = Annotated[Hello | Idle | Progress | Log | Done | Failed | Cancelled | Need
                       | Part | Heartbeat, Field(discriminator="t")]
Outcome = Done | Failed | Cancelled
_to_worker: TypeAdapter[ToWorker] = TypeAdapter(ToWorker)
_from_worker: TypeAdapter[FromWorker] = TypeAdapter(FromWorker)


def encode(*messages: Message) -> bytes:
    return b"".join(m.model_dump_json().encode() + b"\n" for m in messages)


def from_worker(line: bytes) -> FromWorker:
    try:
        return _from_worker.validate_json(line)
    except ValidationError as e:
        raise ProtocolError(f"bad message from worker: {_first(e)}: {line[:200]!r}") from None


def to_worker(line: bytes) -> ToWorker:
    try:
        return _to_worker.validate_json(line)
    except ValidationError as e:
        raise ProtocolError(f"bad message for worker: {_first(e)}: {line[:200]!r}") from None


def check_hello(hello: Hello, worker: str) -> None:
    if hello.version != VERSION:
        raise ProtocolError(f"worker {worker} speaks protocol {hello.version}, this server "
                            f"speaks {VERSION}: install the same stable-core version on both")


def _first(e: ValidationError) -> str:
    err = e.errors()[0]
    return f"{'.'.join(map(str, err['loc']))}: {err['msg']}"
