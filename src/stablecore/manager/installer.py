"""The plugin manager: install, update, remove, freeze and restore plugins, safely.

Installs never run in the server process: the CLI runs them, and the API runs the CLI as a
subprocess. A plugin installed into the base environment is resolved with uv together with
what is installed, under constraints that pin every package the core and the installed
plugins need (torch above all), so one plugin can never swap another's dependencies. A
plugin that cannot live with those pins installs `--isolated`, into its own venv layered on
the base one, and its jobs run in a worker started with that venv's interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, distribution, distributions
from pathlib import Path

import uv
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from stablecore.errors import Conflict, InvalidParams, NotFound, StableCoreError
from stablecore.manager.sources import (
    GIT_URL_RE,
    InstallError,
    check_git_url,
    check_name,
    check_tree,
    git,
    is_branch,
    resolve_ref,
    split_source,
)

Log = Callable[[str], None]


@dataclass
class Entry:
    """One installed plugin as the registry records it."""

    name: str                 # the entry-point name, also its folder name
    dist: str                 # the distribution (pyproject) name
    source: str               # git URL or local folder
    ref: str | None           # what the user asked for
    commit: str | None        # what was installed
    path: str                 # the checkout under plugins_dir/src
    env: str                  # "base", or the isolated venv's folder
    editable: bool = False
    installed: float = 0.0


# --- the project inside a checkout ----------------------------------------------------------
@dataclass
class Project:
    dist: str
    version: str
    requires: list[Requirement]
    plugins: list[str]


def read_project(root: Path) -> Project:
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise InstallError(f"{root.name} has no pyproject.toml: not a stable-core plugin")
    try:
        data = tomllib.loads(pyproject.read_text())
        project = data["project"]
        requires = [Requirement(r) for r in project.get("dependencies", [])]
    except (tomllib.TOMLDecodeError, KeyError, InvalidRequirement) as e:
        raise InstallError(f"{root.name}/pyproject.toml is invalid: {e}") from e
    plugins = list(project.get("entry-points", {}).get("stablecore.plugins", {}))
    if not plugins:
        raise InstallError(f"{project['name']} declares no [project.entry-points."
                           "\"stablecore.plugins\"]: not a stable-core plugin")
    for name in plugins:
        check_name(name)
    return Project(project["name"], str(project.get("version", "")), requires, plugins)


# --- pins: what the core and installed plugins need, at the installed versions ---------------
def pins(roots: list[str]) -> dict[str, tuple[str, str]]:
    """{package: (installed version, who needs it)} over the requirement closure of `roots`."""
    out: dict[str, tuple[str, str]] = {}
    for root in roots:
        stack = [(canonicalize_name(root), None)]
        while stack:
            name, extra = stack.pop()
            if name in out and extra is None:
                continue
            try:
                dist = distribution(name)
            except PackageNotFoundError:
                continue
            out.setdefault(name, (dist.version, root))
            for req in map(Requirement, dist.requires or []):
                if req.marker is None or req.marker.evaluate({"extra": extra or ""}):
                    stack.append((canonicalize_name(req.name), None))
    return out


def conflicts(plugin: str, requires: list[Requirement],
              pinned: dict[str, tuple[str, str]]) -> list[str]:
    """Direct clashes between a plugin's requirements and the pins, as readable lines."""
    lines = []
    for req in requires:
        if req.marker is not None and not req.marker.evaluate():
            continue
        have = pinned.get(canonicalize_name(req.name))
        if have and not req.specifier.contains(have[0], prereleases=True):
            lines.append(f"{plugin} requires {req}, but {req.name}=={have[0]} is pinned "
                         f"because {have[1]} needs it")
    return lines


def base_roots() -> list[str]:
    """The core plus every installed distribution that provides a stable-core plugin."""
    roots = {"stable-core"}
    for dist in distributions():
        if any(ep.group == "stablecore.plugins" for ep in dist.entry_points):
            roots.add(dist.metadata["Name"])
    return sorted(roots)


PROBE = """
import json
from importlib.metadata import distributions
from stablecore.manager.installer import base_roots, pins
print(json.dumps({"pins": pins(base_roots()),
                  "installed": {d.metadata["Name"].lower(): d.version for d in distributions()}}))
"""


def isolated_envs(home: Path) -> dict[str, str]:
    """Plugin name -> the python of its own environment, for plugins installed `--isolated`:
    the engine starts one worker per entry."""
    return {name: str(Path(e.env) / "bin" / "python")
            for name, e in Manager(home).entries().items() if e.env != "base"}


def probe(python: Path) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """(pins, installed versions) as the target interpreter sees its environment."""
    out = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True)
    if out.returncode != 0:
        raise InstallError(f"cannot inspect the environment of {python}: {out.stderr.strip()}")
    data = json.loads(out.stdout)
    return {k: tuple(v) for k, v in data["pins"].items()}, data["installed"]


def site_packages(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


class Manager:
    """Installs plugins into `python`'s environment; keeps its records in `home`."""

    def __init__(self, home: Path, python: Path | None = None, uv_args: list[str] | None = None,
                 log: Log = print) -> None:
        self.home = home
        self.python = python or Path(sys.executable)
        self.uv_args = uv_args or []
        self.log = log
        self.registry_file = home / "plugins.json"

    # --- registry ---------------------------------------------------------------------------
    def entries(self) -> dict[str, Entry]:
        if not self.registry_file.is_file():
            return {}
        return {e["name"]: Entry(**e) for e in json.loads(self.registry_file.read_text())}

    def _save(self, entries: dict[str, Entry]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.registry_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(e) for e in entries.values()], indent=2))
        os.replace(tmp, self.registry_file)

    def get(self, name: str) -> Entry:
        entry = self.entries().get(check_name(name))
        if entry is None:
            raise NotFound(f"plugin {name!r} is not installed by the plugin manager",
                           field="name")
        return entry

    # --- uv -----------------------------------------------------------------------------------
    def uv(self, *args: str, python: Path | None = None) -> None:
        cmd = [uv.find_uv_bin(), "pip", *args, "--python", str(python or self.python),
               *(self.uv_args if args[0] == "install" else [])]
        self.log("$ " + " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        for line in (proc.stdout + proc.stderr).splitlines():
            self.log("  " + line)
        if proc.returncode != 0:
            raise InstallError(f"uv pip {args[0]} failed:\n{proc.stderr.strip()}")

    # --- install --------------------------------------------------------------------------------
    def install(self, spec: str, isolated: bool = False, editable: bool = False) -> Entry:
        """Install from a git URL or a local folder, optionally at `@REF`."""
        source, ref = split_source(spec)
        # 1. fetch the source into a fresh checkout (an editable install uses the folder)
        staging = Path(source).resolve() if editable else (
            self.home / "src" / f".staging-{os.getpid()}")
        try:
            commit = self._fetch(source, ref, staging, editable)
            check_tree(staging)
            project = read_project(staging)
            name = project.plugins[0]
            if name in self.entries():
                raise Conflict(f"plugin {name!r} is installed; use `stable-core plugin update "
                               f"{name}` or remove it first", field="name")
            checkout = staging if editable else self.home / "src" / name
            if not editable:
                shutil.rmtree(checkout, ignore_errors=True)
                staging.rename(checkout)
        finally:
            if not editable:
                shutil.rmtree(staging, ignore_errors=True)
        # 2. resolve and install, into the base env under pins, or into its own env
        entry = Entry(name, project.dist, source, ref, commit, str(checkout), "base", editable,
                      time.time())
        try:
            if isolated:
                entry.env = str(self._install_isolated(name, checkout, project))
            else:
                self._install_base(name, checkout, project, editable)
        except BaseException:
            if not editable:
                shutil.rmtree(checkout, ignore_errors=True)
            raise
        # 3. record it
        entries = self.entries()
        entries[name] = entry
        self._save(entries)
        self.log(f"installed {name} ({project.dist} {project.version}"
                 f"{', commit ' + commit[:10] if commit else ''}, env {entry.env})")
        return entry

    def _fetch(self, source: str, ref: str | None, dest: Path, editable: bool) -> str | None:
        folder = Path(source)
        if editable and not folder.is_dir():
            raise InvalidParams(f"an editable install needs a local folder, not {source!r}",
                                field="source")
        if not GIT_URL_RE.match(source) and folder.is_dir():
            if editable:
                return git("rev-parse", "HEAD", cwd=folder) if (folder / ".git").exists() else None
            if (folder / ".git").exists():
                source = folder.resolve().as_uri()
            else:
                if ref:
                    raise InvalidParams(f"{source} is not a git repository; it has no @{ref}",
                                        field="ref")
                shutil.copytree(folder, dest, symlinks=True)
                return None
        check_git_url(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"cloning {source}{'@' + ref if ref else ''}")
        git("clone", "--quiet", "--no-checkout", "--", source, str(dest))
        git("checkout", "--quiet", "--detach", resolve_ref(dest, ref or "HEAD"), cwd=dest)
        return git("rev-parse", "HEAD", cwd=dest)

    def _install_base(self, name: str, checkout: Path, project: Project, editable: bool) -> None:
        pinned, _ = probe(self.python)
        mine = {n for n, (_, who) in pinned.items()
                if canonicalize_name(who) == canonicalize_name(project.dist)}
        pinned = {n: p for n, p in pinned.items() if n not in mine}  # an update may change them
        clashes = conflicts(name, project.requires, pinned)
        if clashes:
            raise InstallError("refusing to install " + name + ": it would change what others "
                               "need:\n  " + "\n  ".join(clashes) + "\ninstall it with "
                               "--isolated to give it an environment of its own")
        constraints = self.home / f"constraints-{os.getpid()}.txt"
        constraints.parent.mkdir(parents=True, exist_ok=True)
        constraints.write_text("".join(f"{n}=={v}\n" for n, (v, _) in sorted(pinned.items())))
        try:
            target = ["-e", str(checkout)] if editable else [str(checkout)]
            self.uv("install", "--constraint", str(constraints), "--reinstall-package",
                    project.dist, "--refresh-package", project.dist, *target)
        finally:
            constraints.unlink(missing_ok=True)

    def _install_isolated(self, name: str, checkout: Path, project: Project) -> Path:
        """A venv whose own packages come first, then the base env (for the core)."""
        env = self.home / "envs" / name
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([uv.find_uv_bin(), "venv", "--quiet", "--python", str(self.python),
                        str(env)], check=True, capture_output=True)
        python = env / "bin" / "python"
        base_site = str(site_packages(self.python))
        _, installed = probe(self.python)
        (site_packages(python) / "_stablecore_base.pth").write_text(
            f"import site; site.addsitedir({base_site!r})\n")
        # What the base already satisfies is used from there; the rest goes into the env.
        missing = [str(r) for r in project.requires
                   if not r.specifier.contains(installed.get(canonicalize_name(r.name), "0a0"),
                                               prereleases=True)
                   or canonicalize_name(r.name) not in installed]
        if missing:
            self.uv("install", *missing, python=python)
        self.uv("install", "--no-deps", str(checkout), python=python)
        return env

    # --- update, remove ----------------------------------------------------------------------
    def update(self, name: str) -> Entry:
        """Fetch, show the incoming commits, reinstall; roll back if the install fails."""
        entry = self.get(name)
        checkout = Path(entry.path)
        if entry.editable or entry.commit is None:
            raise InstallError(f"{name} is installed from a folder ({entry.source}); "
                               "there is nothing to fetch")
        git("fetch", "--quiet", "--tags", "origin", cwd=checkout)
        target = f"origin/{entry.ref}" if entry.ref and is_branch(checkout, entry.ref) else (
            entry.ref or "origin/HEAD")
        new = resolve_ref(checkout, target)
        if new == entry.commit:
            self.log(f"{name} is up to date at {new[:10]}")
            return entry
        for line in git("log", "--oneline", f"{entry.commit}..{new}", cwd=checkout).splitlines():
            self.log(f"  incoming: {line}")
        try:
            self._reinstall(entry, checkout, new)
        except StableCoreError as e:
            self.log(f"update failed, rolling back to {entry.commit[:10]}: {e.message}")
            self._reinstall(entry, checkout, entry.commit)
            raise InstallError(f"update of {name} to {new[:10]} failed and was rolled back to "
                               f"{entry.commit[:10]}: {e.message}") from e
        entry.commit, entry.installed = new, time.time()
        entries = self.entries()
        entries[name] = entry
        self._save(entries)
        self.log(f"updated {name} to {new[:10]}")
        return entry

    def _reinstall(self, entry: Entry, checkout: Path, commit: str) -> None:
        git("checkout", "--quiet", "--detach", commit, cwd=checkout)
        check_tree(checkout)
        project = read_project(checkout)
        if entry.env == "base":
            self._install_base(entry.name, checkout, project, editable=False)
        else:
            self._install_isolated(entry.name, checkout, project)

    def remove(self, name: str) -> None:
        entry = self.get(name)
        if entry.env == "base":
            self.uv("uninstall", entry.dist)
        else:
            shutil.rmtree(entry.env, ignore_errors=True)
        if not entry.editable:
            shutil.rmtree(entry.path, ignore_errors=True)
        entries = self.entries()
        del entries[name]
        self._save(entries)
        self.log(f"removed {name}")

    # --- freeze, restore ------------------------------------------------------------------------
    def freeze(self) -> dict:
        return {"plugins": [{"name": e.name, "source": e.source, "commit": e.commit,
                             "isolated": e.env != "base"} for e in self.entries().values()]}

    def restore(self, lock: dict) -> list[Entry]:
        """Install every plugin of a lock at its exact commit; already-matching ones are kept."""
        done = []
        current = self.entries()
        for item in lock.get("plugins", []):
            name = check_name(item["name"])
            have = current.get(name)
            if have is not None and have.commit == item["commit"]:
                done.append(have)
                continue
            if have is not None:
                self.remove(name)
            spec = item["source"] + (f"@{item['commit']}" if item.get("commit") else "")
            done.append(self.install(spec, isolated=bool(item.get("isolated"))))
        return done
