"""`stable-core shell`: an interactive prompt over one server, through the SDK `Client`.

Completion comes from the live catalog (GET /api/specs), history is kept in the user's state
folder, `run` follows a job with a progress bar (Ctrl-C asks whether to cancel it), and no
error leaves the shell: each command's failure is printed and the prompt comes back.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import platformdirs
from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.history import FileHistory
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from stablecore.cli.catalog import Catalog, coerce, describe
from stablecore.cli.completion import ShellCompleter
from stablecore.client import ApiError, Client

CATALOG_TTL_S = 10.0  # the catalog is fetched again before a prompt once it is this old
TEXT_SHOWN = 400  # characters of a text output printed after a run

COMMANDS = {
    "run": "run JOB [key=value ...] [input=path ...] [-i input=path] [-p PRIORITY]",
    "help": "help [JOB | COMMAND]: a job's params, inputs and outputs, or this list",
    "specs": "specs [TEXT]: the jobs the server offers",
    "jobs": "jobs [STATE] [-n N] [--all]: recent jobs of this session (--all: every session)",
    "show": "show [JOB_ID]: one job (default: the last one run)",
    "cancel": "cancel [JOB_ID]: cancel a queued or running job",
    "retry": "retry [JOB_ID]: run a job again with the same params and inputs",
    "open": "open [JOB_ID | ARTIFACT_ID | OUTPUT]: a result in the system viewer, or its path",
    "session": "session [new [NAME] | list | ID]: the session new jobs go to",
    "set": "set [key=value ...]: defaults every later run uses where the job has that param",
    "unset": "unset KEY ...: forget defaults",
    "out": "out [FOLDER]: where outputs are downloaded (default: the current folder)",
    "plugins": "plugins: installed plugins, their jobs and errors",
    "workers": "workers: worker processes, their state, job and cached models",
    "reload": "reload: fetch the catalog again",
    "exit": "exit (or Ctrl-D): leave the shell",
}


class UsageError(Exception):
    """A command typed wrongly; the message says how it is used."""


class Shell:
    """The commands, the state they share (catalog, defaults, session, last job), the loop."""

    def __init__(self, client: Client, console: Console | None = None,
                 history: Path | None = None) -> None:
        self.client = client
        self.console = console or Console(highlight=False)
        self.catalog = Catalog()
        self.fetched = -CATALOG_TTL_S
        self.defaults: dict[str, Any] = {}
        self.session: str | None = None
        self.session_name = ""
        self.out = Path(".")
        self.recent: list[str] = []  # job ids, newest first
        self.results: dict[str, Path] = {}  # "job_id/output" -> downloaded file
        self.history = history or platformdirs.user_state_path("stable-core") / "shell_history"

    # --- the loop ---------------------------------------------------------------------------
    def loop(self) -> None:
        self.history.parent.mkdir(parents=True, exist_ok=True)
        prompt: PromptSession[str] = PromptSession(
            history=FileHistory(str(self.history)), auto_suggest=AutoSuggestFromHistory(),
            completer=ShellCompleter(COMMANDS, lambda: self.catalog, lambda: self.recent),
            complete_while_typing=False)
        self.console.print(f"stable-core shell on [bold]{self.client.url}[/bold]; "
                           "Tab completes, `help` lists commands, Ctrl-D leaves")
        while True:
            self.refresh()
            try:
                with patch_stdout(raw=True):  # server logs (serve --shell) print above it
                    line = prompt.prompt(self.prompt_text())
            except KeyboardInterrupt:
                continue
            except EOFError:
                return
            if line.strip() in ("exit", "quit"):
                return
            self.execute(line)

    def prompt_text(self) -> str:
        return f"sc({self.session_name})> " if self.session else "sc> "

    def execute(self, line: str) -> None:
        """Run one command line; print, never raise, whatever goes wrong."""
        try:
            words = shlex.split(line)
            if not words:
                return
            command = getattr(self, f"do_{words[0]}", None)
            if command is None:
                raise UsageError(f"unknown command {words[0]!r}; `help` lists them")
            command(words[1:])
        except UsageError as e:
            self.error(str(e))
        except ApiError as e:
            self.error(e.detail + (f" (field {e.field})" if e.field else ""))
        except httpx.TransportError as e:
            self.error(f"cannot reach {self.client.url} ({e or type(e).__name__}); "
                       "is `stable-core serve` running?")
        except KeyboardInterrupt:
            self.error("interrupted")
        except Exception as e:  # a shell stays up whatever a command does
            self.error(f"{type(e).__name__}: {e}")

    def error(self, message: str) -> None:
        self.console.print(f"[red]error:[/red] {escape(message)}")

    def refresh(self, force: bool = False) -> None:
        if force or time.monotonic() - self.fetched > CATALOG_TTL_S:
            try:
                self.catalog = Catalog(self.client.specs())
                self.fetched = time.monotonic()
            except (ApiError, httpx.TransportError) as e:
                self.error(f"cannot fetch the catalog from {self.client.url}: {e}")
                self.fetched = time.monotonic()  # try again later, not at every prompt

    # --- running jobs -----------------------------------------------------------------------
    def do_run(self, args: list[str]) -> None:
        if not args:
            raise UsageError(COMMANDS["run"])
        job, params, inputs, priority = self.parse_run(args)
        ids: dict[str, Any] = {}
        for name, paths in inputs.items():
            refs = [self.client.upload(p, self.session)["id"] for p in paths]
            ids[name] = refs if self.catalog.inputs(job)[name].get("many") else refs[0]
        submitted = self.client.submit(job, params, ids, self.session, priority)
        self.follow(submitted)

    def parse_run(self, args: list[str]) -> tuple[str, dict[str, Any], dict[str, list[Path]],
                                                  int]:
        """Job name, typed params (with `set` defaults), input files, priority; raises
        UsageError naming the bad word and what the job takes."""
        job, rest = args[0], args[1:]
        if self.catalog.get(job) is None:
            self.refresh(force=True)
            if self.catalog.get(job) is None:
                close = [n for n in self.catalog.names() if job.split(".")[-1] in n]
                hint = f"; did you mean {', '.join(close[:5])}?" if close else ""
                raise UsageError(f"unknown job {job!r}{hint} (`specs` lists them)")
        schema, input_specs = self.catalog.params(job), self.catalog.inputs(job)
        params = {k: v for k, v in self.defaults.items() if k in schema}
        inputs: dict[str, list[Path]] = {}
        priority, words = 0, iter(rest)
        for word in words:
            if word in ("-p", "--priority"):
                priority = int(next(words, "0"))
                continue
            explicit = word in ("-i", "--input")
            pair = next(words, "") if explicit else word
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"{pair!r} is not key=value (`help {job}`)")
            if key in input_specs:
                path = Path(value).expanduser()
                if not path.is_file():
                    raise UsageError(f"input {key}: no file {value!r}")
                inputs.setdefault(key, []).append(path)
            elif explicit:
                raise UsageError(f"{job} has no input {key!r}; its inputs: "
                                 f"{', '.join(input_specs) or 'none'}")
            else:  # unknown names go to the server, whose message names them
                params[key] = coerce(schema.get(key), value)
        return job, params, inputs, priority

    def follow(self, job: dict[str, Any]) -> None:
        """A progress bar until the job ends, then its outputs. Ctrl-C asks what to do."""
        job_id, name, last = job["id"], job["spec"], 0
        self.remember(job_id)
        self.console.print(f"{name} [dim]{job_id}[/dim]")
        with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                      TimeElapsedColumn(), console=self.console, transient=True) as bar:
            task = bar.add_task(f"{name} queued", total=None)
            while True:
                try:
                    for event in self.client.events(job_id, since=last):
                        last = event["seq"]
                        self.show_event(bar, task, name, event)
                    break
                except KeyboardInterrupt:
                    bar.stop()
                    answer = self.ask_cancel(job_id)
                    if answer == "b":
                        self.console.print(f"{job_id} goes on; `show {job_id}` later")
                        return
                    if answer == "y":
                        self.client.cancel(job_id)
                    bar.start()
        self.report(self.client.job(job_id))

    @staticmethod
    def show_event(bar: Progress, task: Any, name: str, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        kind = event["type"]
        if kind == "job.queued":
            bar.update(task, description=f"{name} queued", completed=0, total=None)
        elif kind == "job.started":
            bar.update(task, description=f"{name} running")
        elif kind == "job.progress":
            bar.update(task, description=f"{name} running", completed=data["step"],
                       total=data["total"])

    def ask_cancel(self, job_id: str) -> str:
        """y: cancel the job, n: keep following it, b: leave it running in the background."""
        question: PromptSession[str] = PromptSession()
        while True:
            try:
                answer = question.prompt(f"cancel {job_id}? [Y]es / [n]o, keep following / "
                                         "[b]ackground: ").strip().lower()[:1] or "y"
            except (KeyboardInterrupt, EOFError):
                return "y"
            if answer in "ynb":
                return answer

    def report(self, job: dict[str, Any]) -> None:
        took = (job["finished"] or 0) - (job["started"] or job["finished"] or 0)
        colour = {"succeeded": "green", "failed": "red"}.get(job["state"], "yellow")
        self.console.print(f"[{colour}]{job['state']}[/{colour}] {job['spec']} "
                           f"[dim]{job['id']} in {took:.2f} s[/dim]")
        if job["error"]:
            self.console.print(f"  [red]{escape(job['error'])}[/red]")
        for name, refs in (job["outputs"] or {}).items():
            if isinstance(refs, list):  # a list output: every file, shown as one line
                paths = [self.fetch(job["id"], f"{name}[{i}]", r) for i, r in enumerate(refs)]
                span = f"{paths[0].name} .. {paths[-1].name}" if paths else ""
                self.console.print(f"  {name}: {len(paths)} files in {self.out} {span}")
            elif refs["kind"] == "json":
                shown = json.dumps(refs.get("value"))
                self.console.print(f"  {name}: {escape(shown[:TEXT_SHOWN])}")
            else:
                path = self.fetch(job["id"], name, refs)
                self.console.print(f"  {name}: {path}")
                if refs["kind"] == "text":
                    text = path.read_text(errors="replace")
                    self.console.print(f"    [italic]{escape(text[:TEXT_SHOWN])}[/italic]")

    def fetch(self, job_id: str, label: str, ref: dict[str, Any]) -> Path:
        """An output downloaded once into the out folder under its session file name."""
        key = f"{job_id}/{label}"
        if key not in self.results or not self.results[key].is_file():
            self.out.mkdir(parents=True, exist_ok=True)
            name = Path(ref.get("path") or ref["id"]).name
            self.results[key] = self.client.download(ref["id"], self.out / name)
        return self.results[key]

    def remember(self, job_id: str) -> None:
        self.recent = [job_id, *(j for j in self.recent if j != job_id)][:50]

    def job_arg(self, args: list[str]) -> str:
        if args:
            return args[0]
        if not self.recent:
            raise UsageError("no job run yet in this shell: give a job id")
        return self.recent[0]

    # --- jobs -------------------------------------------------------------------------------
    def do_jobs(self, args: list[str]) -> None:
        state, limit, every = None, 20, "--all" in args
        words = iter(a for a in args if a != "--all")
        for word in words:
            if word == "-n":
                limit = int(next(words, "20"))
            else:
                state = word
        page = self.client.jobs(state, None if every else self.session, limit)
        table = Table("id", "job", "state", "age", "error", box=None)
        for j in page["jobs"]:
            age = f"{time.time() - j['created']:.0f} s"
            table.add_row(j["id"], j["spec"], j["state"], age, escape((j["error"] or "")[:60]))
        self.console.print(table)
        self.console.print(f"[dim]{len(page['jobs'])} of {page['total']}[/dim]")

    def do_show(self, args: list[str]) -> None:
        job = self.client.job(self.job_arg(args))
        self.remember(job["id"])
        self.console.print(f"[bold]{job['id']}[/bold] {job['spec']} {job['state']} "
                           f"[dim](session {job['session_id']}, worker {job['worker']}, "
                           f"attempts {job['attempts']})[/dim]")
        for title, values in (("params", job["params"]), ("inputs", job["inputs"])):
            for k, v in (values or {}).items():
                self.console.print(f"  {title[:-1]} {k} = {escape(json.dumps(v))}")
        for name, refs in (job["outputs"] or {}).items():
            for ref in refs if isinstance(refs, list) else [refs]:
                shown = json.dumps(ref["value"]) if "value" in ref else ref.get("path", ref["id"])
                self.console.print(f"  output {name} ({ref['kind']}): {escape(shown)}")
        if job["error"]:
            self.console.print(f"  [red]error: {escape(job['error'])}[/red]")
        if job.get("traceback"):
            tail = job["traceback"].rstrip().splitlines()[-6:]
            self.console.print("[dim]" + escape("\n".join(tail)) + "[/dim]")

    def do_cancel(self, args: list[str]) -> None:
        job = self.client.cancel(self.job_arg(args))
        self.console.print(f"{job['id']}: cancel requested (was {job['state']})")

    def do_retry(self, args: list[str]) -> None:
        old = self.job_arg(args)
        response = self.client.http.post(f"/api/jobs/{old}/retry")
        if response.is_error:
            raise ApiError(response.status_code, response.json())
        self.follow(response.json())

    def do_open(self, args: list[str]) -> None:
        path = self.find_result(args[0] if args else None)
        if open_file(path):
            self.console.print(f"opened {path}")
        else:
            self.console.print(f"{path.resolve()} [dim](no viewer here: no display)[/dim]")

    def find_result(self, what: str | None) -> Path:
        """A downloaded file: of an artifact id, of a job (its first file output), or an
        output by name of the newest job in this shell that has file outputs."""
        if what and what.startswith("a_"):
            info = self.client.get(f"/api/artifacts/{what}/info")
            return self.fetch(info.get("job_id") or "upload", what, info)
        candidates = [what] if what and what.startswith("j_") else self.recent[:10]
        if not candidates:
            raise UsageError("no job run yet in this shell: give a job or artifact id")
        for job_id in candidates:
            job = self.client.job(job_id)
            for name, refs in (job["outputs"] or {}).items():
                for i, ref in enumerate(refs if isinstance(refs, list) else [refs]):
                    label = f"{name}[{i}]" if isinstance(refs, list) else name
                    if ref["kind"] != "json" and what in (None, job_id, label, name):
                        return self.fetch(job_id, label, ref)
        raise UsageError(f"no file output {what or ''!r} in "
                         f"{candidates[0] if len(candidates) == 1 else 'the recent jobs'}")

    # --- catalog, settings, sessions --------------------------------------------------------
    def do_help(self, args: list[str]) -> None:
        if args and self.catalog.get(args[0]):
            self.help_job(args[0])
        elif args and args[0] in COMMANDS:
            self.console.print(COMMANDS[args[0]])
        elif args:
            raise UsageError(f"no job or command {args[0]!r}")
        else:
            for usage in COMMANDS.values():
                self.console.print(f"  {escape(usage)}")

    def help_job(self, name: str) -> None:
        spec = self.catalog.specs[name]
        self.console.print(f"[bold]{name}[/bold] [dim]{spec['plugin']} {spec['version']}"
                           f"[/dim]\n  {escape(spec['description'])}")
        table = Table("param", "type, default, range, description", box=None)
        for key, prop in self.catalog.params(name).items():
            table.add_row(key, escape(describe(prop)))
        for key, spec_in in spec["inputs"].items():
            words = [f"{spec_in['kind']} file{'s: repeat the key' if spec_in['many'] else ''}"]
            words += [] if spec_in["required"] else ["optional"]
            words += [spec_in["description"]] if spec_in.get("description") else []
            table.add_row(f"{key} (input)", escape(", ".join(words)))
        for key, out in spec["outputs"].items():
            table.add_row(f"{key} (output)", f"{out['kind']}{' list' if out['many'] else ''}")
        self.console.print(table)

    def do_specs(self, args: list[str]) -> None:
        self.refresh(force=True)
        table = Table("job", "inputs", "description", box=None)
        for name in self.catalog.names():
            spec = self.catalog.specs[name]
            if args and args[0].lower() not in (name + spec["description"]).lower():
                continue
            table.add_row(name, ", ".join(spec["inputs"]),
                          escape(spec["description"].split("\n")[0][:70]))
        self.console.print(table)

    def do_reload(self, args: list[str]) -> None:
        self.refresh(force=True)
        self.console.print(f"{len(self.catalog.specs)} jobs")

    def do_set(self, args: list[str]) -> None:
        for pair in args:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f"{pair!r} is not key=value")
            prop = self.catalog.any_param(key)
            if prop is None:
                self.console.print(f"[yellow]note:[/yellow] no job has a param {key!r} now")
            self.defaults[key] = coerce(prop, value)
        for key, value in self.defaults.items():
            self.console.print(f"  {key} = {escape(json.dumps(value))}")
        if not self.defaults:
            self.console.print("no defaults set")

    def do_unset(self, args: list[str]) -> None:
        for key in args:
            self.defaults.pop(key, None)

    def do_out(self, args: list[str]) -> None:
        if args:
            self.out = Path(args[0]).expanduser()
        self.console.print(f"outputs go to {self.out.resolve()}")

    def do_session(self, args: list[str]) -> None:
        if args[:1] == ["new"]:
            created = self.client.create_session(" ".join(args[1:]) or None)
            self.session, self.session_name = created["id"], created["name"]
        elif args[:1] == ["list"] or not args:
            table = Table("id", "name", "created", box=None)
            for s in self.client.sessions()[:20]:
                mark = " *" if s["id"] == self.session else ""
                table.add_row(s["id"] + mark, s["name"], time.strftime(
                    "%Y-%m-%d %H:%M", time.localtime(s["created"])))
            self.console.print(table)
        else:
            found = [s for s in self.client.sessions() if args[0] in (s["id"], s["name"])]
            if not found:
                raise UsageError(f"no session {args[0]!r} (`session list`)")
            self.session, self.session_name = found[0]["id"], found[0]["name"]
        current = f"{self.session} ({self.session_name})" if self.session else "the server's"
        self.console.print(f"new jobs go to session {current}")

    def do_plugins(self, args: list[str]) -> None:
        table = Table("plugin", "version", "jobs", "error", box=None)
        for p in self.client.plugins():
            error = p["error"] or "; ".join(f"{k}: {v}" for k, v in p["job_errors"].items())
            table.add_row(p["name"], p["version"] or "", str(len(p["jobs"])),
                          f"[red]{escape(error)}[/red]" if error else "")
        self.console.print(table)

    def do_workers(self, args: list[str]) -> None:
        table = Table("worker", "device", "state", "jobs", "models", "done", "RSS MB", box=None)
        for w in self.client.workers():
            table.add_row(w["name"], w["device"], w["state"], ", ".join(w["jobs"]),
                          ", ".join(map(str, w["models"])), str(w.get("jobs_done", "")),
                          f"{w.get('rss_mb') or 0:.0f}")
        self.console.print(table)


def open_file(path: Path, environ: dict[str, str] | None = None) -> bool:
    """Open a file in the system's viewer; False where there is none (no display)."""
    env = os.environ if environ is None else environ
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]
        return True
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    has_display = sys.platform == "darwin" or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")
    if not has_display or shutil.which(opener) is None:
        return False
    subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    return True

