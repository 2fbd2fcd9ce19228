"""What a node installs to run the same code as this server: stable-core and the plugins.

Each distribution comes the way it was installed here, as its install record says (PEP 610
`direct_url.json`, what `plugin freeze` records too): from a folder or an editable checkout
it is built into a wheel here and shipped; from git it is installed on the node from the same
commit; from an index, the same version. A plugin installed `--isolated` is built into a
wheel from its checkout here and gets an environment of its own there too, layered on the
node's venv, as here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import Parser
from importlib.metadata import Distribution, distribution, entry_points
from pathlib import Path
from urllib.parse import unquote, urlsplit

import uv
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from stablecore.errors import InvalidParams, NodeError
from stablecore.spec import ENTRY_POINT_GROUP

CORE = "stable-core"
SKIP_ANYWHERE = {".git", "__pycache__", "node_modules", ".venv", "venv", "build", "dist",
                 ".pytest_cache", ".ruff_cache", ".mypy_cache"}
SKIP_TOP = {"tests", "docs", "bench", "web", "data", "plugins", "examples"}  # not in a wheel


@dataclass
class Isolated:
    """A plugin installed `--isolated` here: its wheel and what that wheel requires."""

    plugin: str
    wheel: Path
    requirements: list[str]


@dataclass
class Bundle:
    wheels: list[Path] = field(default_factory=list)  # built here, shipped
    requirements: list[str] = field(default_factory=list)  # resolved on the node
    plugins: list[str] = field(default_factory=list)
    dists: set[str] = field(default_factory=set)  # canonical names of what we bring
    isolated: list[Isolated] = field(default_factory=list)  # each in an env of its own

    def stamp(self, *extra: object) -> str:
        """Names what the node's environment must hold: equal stamps, nothing to install."""
        digest = hashlib.sha256()
        for wheel in sorted(self.wheels) + [i.wheel for i in self.isolated]:
            digest.update(wheel.name.encode() + _file_sha(wheel).encode())
        digest.update(json.dumps([sorted(self.requirements), [str(e) for e in extra]]).encode())
        return digest.hexdigest()

    def wheel_requirements(self) -> list[str]:
        """What the shipped wheels require (their METADATA), less what the bundle brings."""
        found = [r for wheel in self.wheels for r in requires_dist(wheel)]
        return [r for r in found + self.requirements
                if canonicalize_name(_name(r)) not in self.dists or r in self.requirements]


def installed_plugins() -> dict[str, Distribution | None]:
    """Plugin name -> the distribution that provides it in this environment."""
    return {ep.name: ep.dist for ep in entry_points(group=ENTRY_POINT_GROUP)}


def requires_dist(wheel: Path) -> list[str]:
    """What a wheel's METADATA says it requires."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        headers = Parser().parsestr(z.read(meta).decode())
    return headers.get_all("Requires-Dist") or []


def make_bundle(cache: Path, plugins: list[str] | None,
                log: Callable[[str], None] = print,
                isolated: dict[str, Path] | None = None) -> Bundle:
    """Build or name every distribution a node needs for `plugins` (None: all of ours);
    `isolated` maps each plugin installed `--isolated` here to its checkout."""
    isolated = isolated or {}
    available = installed_plugins()
    wanted = list(available) + list(isolated) if plugins is None else plugins
    unknown = [p for p in wanted if p not in available and p not in isolated]
    if unknown:
        raise InvalidParams(f"no plugin {', '.join(map(repr, unknown))} on this server; it has "
                            f"{', '.join(sorted([*available, *isolated])) or 'none'}",
                            field="plugins")
    bundle = Bundle(plugins=sorted(wanted))
    for plugin in sorted(p for p in wanted if p in isolated):
        wheel = build_wheel(isolated[plugin], cache, log)
        bundle.isolated.append(Isolated(plugin, wheel, requires_dist(wheel)))
    dists = [distribution(CORE)] + [d for p in wanted
                                    if p not in isolated and (d := available[p]) is not None]
    for dist in dists:
        name = canonicalize_name(dist.metadata["Name"])
        if name in bundle.dists:
            continue  # one distribution with several plugins
        bundle.dists.add(name)
        kind, where = source_of(dist)
        if kind == "folder":
            bundle.wheels.append(build_wheel(Path(where), cache, log))
        else:
            bundle.requirements.append(where)
    return bundle


def source_of(dist: Distribution) -> tuple[str, str]:
    """("folder", path) to build here, or ("requirement", spec) for the node to resolve."""
    name, version = dist.metadata["Name"], dist.version
    text = dist.read_text("direct_url.json")
    if not text:
        return "requirement", f"{name}=={version}"
    info = json.loads(text)
    url = info.get("url", "")
    if "vcs_info" in info:
        vcs = info["vcs_info"]
        return "requirement", f"{name} @ {vcs['vcs']}+{url}@{vcs['commit_id']}"
    if "dir_info" in info and url.startswith("file:"):
        return "folder", unquote(urlsplit(url).path)
    if url.startswith(("http://", "https://")):
        return "requirement", f"{name} @ {url}"
    return "requirement", f"{name}=={version}"


def build_wheel(folder: Path, cache: Path, log: Callable[[str], None]) -> Path:
    """A wheel of the package in `folder`, built from a clean copy; kept by the tree's hash,
    so an unchanged package is the same file and a node that has it gets nothing new."""
    if not (folder / "pyproject.toml").is_file() and not (folder / "setup.py").is_file():
        raise NodeError(f"{folder} (installed from a folder) is not a Python project any more; "
                        "cannot build it for the node")
    key = _tree_hash(folder)[:16]
    out = cache / f"{folder.name}-{key}"
    built = sorted(out.glob("*.whl")) if out.is_dir() else []
    if built:
        return built[0]
    log(f"building a wheel of {folder}")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / folder.name
        shutil.copytree(folder, src, ignore=_ignore(folder))
        proc = subprocess.run([uv.find_uv_bin(), "build", "--wheel", "--no-build-isolation",
                               "--python", sys.executable, "--out-dir", str(Path(tmp) / "out"),
                               str(src)], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise NodeError(f"building {folder} failed: {proc.stderr.strip()[-600:]}")
        out.mkdir(parents=True, exist_ok=True)
        wheel = next((Path(tmp) / "out").glob("*.whl"))
        return Path(shutil.copy2(wheel, out / wheel.name))


def _ignore(root: Path) -> Callable[[str, list[str]], set[str]]:
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = SKIP_TOP if Path(folder) == root else set()
        return {n for n in names if n in SKIP_ANYWHERE or n in top or n.endswith(".egg-info")}
    return ignore


def _tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    skip = _ignore(root)
    for folder, dirs, files in os.walk(root):
        dropped = skip(folder, dirs + files)
        dirs[:] = sorted(d for d in dirs if d not in dropped)
        for name in sorted(f for f in files if f not in dropped):
            path = Path(folder) / name
            digest.update(str(path.relative_to(root)).encode() + b"\0")
            digest.update(_file_sha(path).encode())
    return digest.hexdigest()


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _name(requirement: str) -> str:
    try:
        return Requirement(requirement).name
    except InvalidRequirement:
        return requirement


def missing(requirements: list[str], installed: dict[str, str],
            environment: dict[str, str]) -> list[str]:
    """The requirements the node's environment does not satisfy (markers evaluated with the
    node's facts); what is there already, e.g. torch in a GPU image, is used as it is."""
    have = {canonicalize_name(k): v for k, v in installed.items()}
    out = []
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({**environment, "extra": ""}):
            continue
        version = have.get(canonicalize_name(req.name))
        if req.url or version is None or not req.specifier.contains(version, prereleases=True):
            out.append(text)
    return sorted(set(out))
