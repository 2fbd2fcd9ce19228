"""Model files on a node: the files its plugins declare (`MODEL_FILES`), put in the node's
own cache before its workers start.

Two halves of one exchange. `provide` runs here, in the server; `main` runs ON the node, in
its venv (`python -m stablecore.node_models PLAN`), and prints progress lines, then one JSON
object. By default the node pulls every missing file from its source itself (its uplink, not
ours). With `push`, the files our cache holds are sent over the SSH connection (SFTP) first,
then placed there only once their sha256 matches; what the node lacks and we lack too is
still pulled there. A file the node has is neither sent nor pulled.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path, PurePosixPath
from typing import Any

import asyncssh

from stablecore.errors import NodeError
from stablecore.modelfiles import (
    ENV_CACHE,
    FileCache,
    ModelFile,
    ModelFileError,
    declared,
    local_path,
    models_cache,
    pull,
    sha256_of,
)
from stablecore.spec import ENTRY_POINT_GROUP

REPORT_EVERY_S = 2.0  # a progress line per file at most this often
INCOMING = ".incoming"  # in the node's cache: pushed files before they are verified


@dataclass
class Provided:
    """What `provide` did: files the node had, pulled itself, and received from us."""

    had: int = 0
    pulled: int = 0
    pushed: int = 0
    bytes_pushed: int = 0

    def summary(self) -> str:
        return (f"model files: {self.had} there already, {self.pulled} pulled there, "
                f"{self.pushed} sent from here ({self.bytes_pushed} bytes)")


# --- here: the server's side --------------------------------------------------------------------
async def provide(conn: Any, python: str, cache_dir: str, plugins: list[str], push: bool,
                  local: FileCache, log: Callable[[str], None]) -> Provided:
    """Make the node's cache at `cache_dir` hold every file `plugins` declare there.

    1. with `push`: ask the node what it declares and lacks, and send what our cache has;
    2. the node places what was sent (sha256 checked), pulls the rest, and reports;
    3. anything still missing is one error naming each file and why.
    `conn` is the node's asyncssh connection; `python` the venv's interpreter there.
    """
    done = Provided()
    placed: list[dict[str, Any]] = []
    if push:
        listing = await _on_node(conn, python, {"cache": cache_dir, "plugins": plugins,
                                                "pull": False}, log)
        lacking = [item for item in listing if item["path"] is None]
        if lacking:
            async with conn.start_sftp_client() as sftp:
                for item in lacking:
                    entry = await _push(sftp, item, cache_dir, local, log)
                    if entry is not None:
                        placed.append(entry)
                        done.pushed += 1
                        done.bytes_pushed += entry["size"]
    report = await _on_node(conn, python, {"cache": cache_dir, "plugins": plugins,
                                           "pull": True, "place": placed}, log)
    done.had = sum(item["how"] == "had" for item in report)
    done.pulled = sum(item["how"] == "pulled" for item in report)
    failed = [item for item in report if item["path"] is None]
    if failed:
        raise NodeError("model files missing on the node: " + "; ".join(
            f"{item['plugin']}: {item['error']}" for item in failed)
            + (" (with --push-models, files in this server's cache are sent instead)"
               if not push else ""))
    if report:  # plugins that declare nothing say nothing
        log(done.summary())
    return done


async def _on_node(conn: Any, python: str, plan: dict[str, Any],
                   log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run `main` there with `plan`; its lines go to `log`, its JSON answer comes back."""
    arg = base64.b64encode(json.dumps(plan).encode()).decode()
    proc = await conn.create_process(f"{shlex.quote(python)} -m stablecore.node_models {arg}",
                                     stderr=asyncssh.STDOUT)
    last, tail = "", deque(maxlen=8)
    async for line in proc.stdout:
        if line.strip():
            last = line.rstrip()
            tail.append(last)
            if not last.startswith("{"):
                log(last)
    await proc.wait()
    if proc.exit_status != 0 or not last.startswith("{"):
        raise NodeError("model files on the node failed: " + " / ".join(tail)[-500:])
    return json.loads(last)["files"]


async def _push(sftp: Any, item: dict[str, Any], cache_dir: str, local: FileCache,
                log: Callable[[str], None]) -> dict[str, Any] | None:
    """Send one file from our cache; None when we do not have it (the node pulls it)."""
    file = ModelFile.from_dict(item["file"])
    try:
        path = await asyncio.to_thread(local_path, file, local)
    except ModelFileError:
        path = None
    if path is None:
        log(f"{file.name}: not in this server's cache; the node pulls it")
        return None
    entry = await asyncio.to_thread(_layout, file, path, local)
    entry["sha256"] = file.sha256 or await asyncio.to_thread(sha256_of, path.resolve())
    entry["part"] = f"{cache_dir}/{INCOMING}/{entry['sha256']}.part"
    size = entry["size"] = path.stat().st_size
    await sftp.makedirs(f"{cache_dir}/{INCOMING}", exist_ok=True)
    started = last = time.monotonic()

    def progress(_src: bytes, _dst: bytes, sent: int, total: int) -> None:
        nonlocal last
        if time.monotonic() - last >= REPORT_EVERY_S and sent < total:
            last = time.monotonic()
            log(f"sending {file.name}: {_percent(sent, total)}")

    log(f"sending {file.name} ({size / 1e6:.1f} MB) from this server's cache")
    await sftp.put(str(path.resolve()), entry["part"], progress_handler=progress)
    seconds = max(time.monotonic() - started, 1e-6)
    log(f"sent {file.name} in {seconds:.1f} s ({size / 1e6 / seconds:.1f} MB/s)")
    return entry


def _layout(file: ModelFile, path: Path, local: FileCache) -> dict[str, Any]:
    """Where the file goes in the node's cache, relative to it, as it sits in ours: a URL
    file by its sha256; a hub file as its blob, the snapshot link to it and the ref."""
    entry: dict[str, Any] = {"file": file.to_dict()}
    if file.url is not None:
        return entry
    hub = Path(os.path.realpath(local.hub or _hub_default()))
    link = Path(os.path.realpath(path.parent)) / path.name  # .../snapshots/<commit>/<file>
    rel = link.relative_to(hub)
    repo = rel.parts[0]  # models--org--name
    entry["blob"] = str(Path(os.path.realpath(path)).relative_to(hub))
    entry["link"] = str(rel)
    ref = hub / repo / "refs" / (file.revision or "main")
    if ref.is_file():
        entry["ref"] = [str(ref.relative_to(hub)), ref.read_text()]
    return entry


def _hub_default() -> str:
    from huggingface_hub import constants  # local_path found a hub file: it is installed

    return constants.HF_HUB_CACHE


def _percent(done: int, total: int | None) -> str:
    if not total:
        return f"{done / 1e6:.1f} MB"
    return f"{100 * done / total:.0f}% ({done / 1e6:.1f} of {total / 1e6:.1f} MB)"


# --- there: the node's side ---------------------------------------------------------------------
def on_node(plan: dict[str, Any], say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """1. place the files pushed to us; 2. list what our plugins declare and whether we have
    it; 3. with `pull`, download what is missing. One row per declared file."""
    cache = models_cache({ENV_CACHE: plan["cache"]})
    placed = {}
    for entry in plan.get("place", []):
        placed[_key(entry["file"])] = _place(entry, cache)
    rows = []
    for plugin, file in _declared(plan["plugins"], say):
        row: dict[str, Any] = {"plugin": plugin, "name": file.name, "file": file.to_dict(),
                               "path": None, "how": "missing", "error": None}
        rows.append(row)
        try:
            path = local_path(file, cache)
        except ModelFileError as e:
            path, row["error"] = None, e.message
        if path is not None:
            error = placed.get(_key(row["file"]))
            row.update(path=str(path), how="placed" if error == "" else "had")
            continue
        if _key(row["file"]) in placed:
            row["error"] = placed[_key(row["file"])]
        if not plan.get("pull") or row["error"]:
            row["error"] = row["error"] or f"{file.name} is not in the node's cache"
            continue
        say(f"pulling {file.name} from {file.source}")
        started = last = time.monotonic()

        def progress(done: int, total: int | None, name: str = file.name) -> None:
            nonlocal last
            if time.monotonic() - last >= REPORT_EVERY_S and done != total:
                last = time.monotonic()
                say(f"pulling {name}: {_percent(done, total)}")

        try:
            path = pull(file, cache, progress)
        except ModelFileError as e:
            row["error"] = e.message
            say(f"failed: {e.message}")
            continue
        seconds = max(time.monotonic() - started, 1e-6)
        size = path.stat().st_size
        say(f"pulled {file.name} ({size / 1e6:.1f} MB) in {seconds:.1f} s "
            f"({size / 1e6 / seconds:.1f} MB/s)")
        row.update(path=str(path), how="pulled")
    return rows


def _key(file: dict[str, Any]) -> str:
    return json.dumps(file, sort_keys=True)


def _declared(plugins: list[str], say: Callable[[str], None]) -> list[tuple[str, ModelFile]]:
    """What our plugins declare, as this node's install of them says; a plugin that fails
    to import is reported (its worker will say the same) and skipped."""
    found = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if ep.name not in plugins:
            continue
        try:
            found += [(ep.name, f) for f in declared(ep.load(), ep.name)]
        except BaseException as e:  # a plugin's import may raise anything
            say(f"plugin {ep.name} not loaded, its model files skipped: "
                f"{type(e).__name__}: {e}")
    return found


def _place(entry: dict[str, Any], cache: FileCache) -> str:
    """Move a pushed file into the cache once its sha256 matches; '' or why not."""
    file = ModelFile.from_dict(entry["file"])
    part = Path(entry["part"])
    if not part.is_file() or part.stat().st_size != entry["size"]:
        return f"{file.name}: the sent file did not arrive whole"
    digest = sha256_of(part)
    if digest != entry["sha256"]:
        part.unlink()
        return f"{file.name}: sent file has sha256 {digest}, expected {entry['sha256']}"
    if file.url is not None:
        dest = cache.url_path(file)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, dest)
        return ""
    assert cache.hub is not None
    blob, link = cache.hub / _inside(entry["blob"]), cache.hub / _inside(entry["link"])
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, blob)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    if entry.get("ref"):
        ref = cache.hub / _inside(entry["ref"][0])
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(entry["ref"][1])
    return ""


def _inside(rel: str) -> PurePosixPath:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts:
        raise SystemExit(f"refusing a cache path outside the cache: {rel}")
    return path


def main() -> None:
    plan = json.loads(base64.b64decode(sys.argv[1]).decode())
    rows = on_node(plan, lambda line: print(line, flush=True))
    print(json.dumps({"files": rows}), flush=True)


if __name__ == "__main__":
    main()
