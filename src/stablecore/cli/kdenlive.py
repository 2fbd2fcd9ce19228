"""`stable-core clipjob` and `stable-core bridges kdenlive install|uninstall|list`.

kdenlive keeps its custom clip jobs in `clipjobsettings.rc` (a KConfig file in its data
folder): one group per setting (Ids, Binary, Parameters, Output, ...), one key per job, the
key a `{uuid}`. Our jobs get a uuid derived from the stable-core job's name, so installing
again updates an entry and `uninstall` finds it; entries of other programs are left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Annotated

import httpx
import typer

from stablecore.cli.clipjob import ClipJobError, check, run_clipjob
from stablecore.cli.common import TokenOpt, UrlOpt, console, fail
from stablecore.client import ApiError, Client

kdenlive_app = typer.Typer(help="kdenlive clip jobs that run stable-core jobs on a clip.",
                           no_args_is_help=True)

NAMESPACE = uuid.UUID("6b1f3c2e-4a5d-4e8f-9c0b-1d2e3f4a5b6c")
PARAMS_PREFIX = "clipjob "

RcOpt = Annotated[Path | None, typer.Option(
    "--config", help="kdenlive's clipjobsettings.rc [default: $XDG_DATA_HOME/kdenlive/...]")]


def settings_file(environ: dict[str, str] | None = None) -> Path:
    """Where kdenlive (QStandardPaths::AppDataLocation) keeps clipjobsettings.rc."""
    env = os.environ if environ is None else environ
    data = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser()
                                           / ".local" / "share")
    return Path(data) / "kdenlive" / "clipjobsettings.rc"


def job_id(job: str) -> str:
    return "{" + str(uuid.uuid5(NAMESPACE, job)) + "}"


class KConfigFile:
    """A KConfig file as groups of key=value, order kept; only what kdenlive writes here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.groups: dict[str, dict[str, str]] = {}
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        group: dict[str, str] | None = None
        for line in text.splitlines():
            if line.startswith("[") and line.rstrip().endswith("]"):
                group = self.groups.setdefault(line.strip()[1:-1], {})
            elif "=" in line and group is not None and not line.startswith("#"):
                key, _, value = line.partition("=")
                group[key.strip()] = _unescape(value.strip())

    def set(self, group: str, key: str, value: str) -> None:
        self.groups.setdefault(group, {})[key] = value

    def remove(self, key: str) -> None:
        for entries in self.groups.values():
            entries.pop(key, None)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for name, entries in self.groups.items():
            if entries:
                lines += [f"[{name}]", *(f"{k}={_escape(v)}" for k, v in entries.items()), ""]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines), encoding="utf-8")
        tmp.replace(self.path)


def _escape(value: str) -> str:
    value = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")
    return "\\s" + value[1:] if value.startswith(" ") else value


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "s": " ", "\\": "\\"}.get(
        m[1], m[0]), value)


def executable() -> str:
    """The absolute path of `stable-core` in this environment (kdenlive needs a file)."""
    beside = Path(sys.executable).parent / "stable-core"
    found = str(beside) if beside.is_file() else shutil.which("stable-core")
    if not found:
        raise fail("cannot find the stable-core executable to register")
    return str(Path(found).absolute())


def entries(config: KConfigFile) -> dict[str, str]:
    """Our clip jobs in the file: kdenlive id -> their name."""
    return {k: config.groups.get("Ids", {}).get(k, "")
            for k, v in config.groups.get("Parameters", {}).items()
            if v.startswith(PARAMS_PREFIX)}


@kdenlive_app.command("install")
def install(
    jobs: Annotated[list[str], typer.Argument(help="stable-core jobs, e.g. transform2d.transform")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", help="key=value every run of the jobs that have it uses (no "
                              "spaces: kdenlive splits on them)")] = None,
    ask: Annotated[list[str] | None, typer.Option(
        "--ask", help="a choice param kdenlive asks for at each run (two per job)")] = None,
    ext: Annotated[str, typer.Option(help="output file type: .mp4 .mkv .webm .mov")] = ".mp4",
    config: RcOpt = None, url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """Add clip jobs to kdenlive (Project Bin > right click > Clip Jobs) that run JOBS on the
    clip, frame by frame, through this server; the result is added to the project."""
    with Client(url, token) as client:
        try:
            specs = {s["name"]: s for s in client.specs()}
        except (ApiError, httpx.TransportError) as e:
            raise fail(e.detail if isinstance(e, ApiError) else str(e)) from None
    fixed = param or []
    if any(" " in p for p in fixed):
        raise fail("--param values cannot hold spaces: kdenlive splits on them")
    for name in [*(p.partition("=")[0] for p in fixed), *(ask or [])]:
        if not any(name in specs.get(j, {}).get("params", {}).get("properties", {})
                   for j in jobs):
            raise fail(f"none of {', '.join(jobs)} has a param {name!r}")
    rc = KConfigFile(config or settings_file())
    binary = executable()
    for job in jobs:  # each takes the --param and --ask names it has
        try:
            check(specs, job, None, None, Path("clip" + ext))
        except ClipJobError as e:
            raise fail(str(e)) from None
        props = specs[job]["params"].get("properties", {})
        words = [f"clipjob {job} --source {{source}} --output {{output}}"]
        if url:
            words.append(f"--url {url}")
        words += [p for p in fixed if p.partition("=")[0] in props]
        asked = {}  # kdenlive's {param1}, {param2}: a list to choose from at each run
        for n, name in enumerate([a for a in ask or [] if a in props][:2], start=1):
            if not props[name].get("enum"):
                raise fail(f"{job}: --ask {name!r} is not a choice param of it")
            words.append(f"{name}={{param{n}}}")
            asked.update({f"Param{n}Type": "list", f"Param{n}Name": name,
                          f"Param{n}List": "  ".join(map(str, props[name]["enum"]))})
        key = job_id(job)
        rc.remove(key)
        for group, value in {"Ids": f"stable-core: {job}", "Binary": binary,
                             "Parameters": " ".join(words), "Output": ext,
                             "FolderName": "stable-core", "FolderUse": "rootfolder",
                             "EnabledTypes": "v", **asked,
                             "Description": specs[job]["description"].split("\n")[0]}.items():
            rc.set(group, key, value)
        console.print(f"{job}: [bold]{' '.join(words)}[/bold]", soft_wrap=True)
    rc.save()
    console.print(f"wrote {rc.path}; restart kdenlive to see the clip jobs", soft_wrap=True)


@kdenlive_app.command("uninstall")
def uninstall(jobs: Annotated[list[str] | None, typer.Argument(
                  help="jobs to remove [default: every stable-core clip job]")] = None,
              config: RcOpt = None) -> None:
    """Remove stable-core's clip jobs from kdenlive."""
    rc = KConfigFile(config or settings_file())
    ours = entries(rc)
    wanted = [job_id(j) for j in jobs] if jobs else list(ours)
    for key in wanted:
        if key in ours:
            console.print(f"removed {ours[key]}")
            rc.remove(key)
    rc.save()


@kdenlive_app.command("list")
def list_jobs(config: RcOpt = None) -> None:
    """The stable-core clip jobs kdenlive has."""
    rc = KConfigFile(config or settings_file())
    for key, name in entries(rc).items():
        console.print(f"{name}: {rc.groups['Parameters'][key]}")


def clipjob_command(
    job: Annotated[str, typer.Argument(help="a job with an image input and output, or a "
                                            "workflow.<name>")],
    params: Annotated[list[str] | None, typer.Argument(help="key=value params")] = None,
    source: Annotated[Path, typer.Option("--source", help="the video clip")] = Path(),
    output: Annotated[Path, typer.Option("--output", help=".mp4 .mkv .webm or .mov")] = Path(),
    input: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="name=path: another input of the job, the same for every "
                              "frame")] = None,
    frame_input: Annotated[str | None, typer.Option(help="the input that takes each frame")] = None,
    frame_output: Annotated[str | None, typer.Option(help="the output made into video")] = None,
    crf: Annotated[int, typer.Option(help="quality for h264/hevc/vp9: lower is better")] = 18,
    url: UrlOpt = None, token: TokenOpt = None,
) -> None:
    """A video through a job frame by frame, with its audio and frame rate kept; prints
    `percentage: N` on stderr (kdenlive's clip jobs read it)."""
    files = {}
    for item in input or []:
        name, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise fail(f"--input {item!r}: expected name=path to a file")
        files[name] = Path(path)
    with Client(url, token) as client:
        try:
            run_clipjob(client, job, source, output, params or [], files, frame_input,
                        frame_output, crf)
        except (ClipJobError, ApiError, httpx.TransportError) as e:
            raise fail(e.detail if isinstance(e, ApiError) else str(e)) from None
