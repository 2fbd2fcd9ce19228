"""The plugin manager with real git repos, real uv resolution from a local wheel folder, and a
real server: conflicts are refused, isolated plugins run in their own env, updates roll back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import uv
import websockets

from stablecore.testing import ServerProcess

JOB = '''
from importlib.metadata import version
from stablecore import Text, job

@job(description="Report which scdep this plugin sees.")
def which() -> Text:
    import scdep
    return f"scdep {{scdep.VERSION}} {{version('stablecore-{name}')}}{suffix}"
'''


def make_wheel(folder: Path, name: str, version: str) -> None:
    """A minimal valid wheel, so uv resolves a real package from a local folder."""
    dist = f"{name}-{version}"
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{dist}.dist-info/RECORD,,")
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)
        whl.writestr(f"{dist}.dist-info/RECORD", "\n".join(record) + "\n")


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


def write_plugin(repo: Path, name: str, requires: str, suffix: str = "") -> str:
    """(Re)write a plugin package in a git repo and commit it; return the commit."""
    (repo / f"src/sc_{name}").mkdir(parents=True, exist_ok=True)
    (repo / "pyproject.toml").write_text(f'''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"
[project]
name = "stablecore-{name}"
version = "0.1.0"
dependencies = ["stable-core", "{requires}"]
[project.entry-points."stablecore.plugins"]
{name} = "sc_{name}"
[tool.setuptools.packages.find]
where = ["src"]
''')
    (repo / f"src/sc_{name}/__init__.py").write_text(JOB.format(name=name, suffix=suffix))
    if not (repo / ".git").exists():
        git("init", "-q", "-b", "main", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", f"{name} {suffix or 'first'}", cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


@dataclass
class World:
    root: Path
    python: Path
    env: dict[str, str]
    data: Path
    site: ThreadingHTTPServer  # serves the plugin index

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), "-m", "stablecore", "plugin", *args],
                              capture_output=True, text=True, env=self.env, timeout=300,
                              cwd=self.root)

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        result = self.cli(*args)
        assert result.returncode == 0, result.stderr
        return result

    def registry(self) -> dict[str, dict]:
        path = self.data / "plugins/plugins.json"
        return {e["name"]: e for e in json.loads(path.read_text())} if path.exists() else {}

    def repo(self, name: str) -> Path:
        return self.root / "repos" / name


TEST_DISTS = ["stablecore-alpha", "stablecore-gamma", "stablecore-mine", "scdep"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Plugins install into this very environment, as a user's would; removed at the end."""
    root = tmp_path_factory.mktemp("pm")
    wheels = root / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "scdep", "1.0")
    make_wheel(wheels, "scdep", "2.0")
    for name, requires in [("alpha", "scdep==1.0"), ("beta", "scdep>=2"),
                           ("gamma", "scdep"), ("evil", "scdep"), ("delta", "pydantic<2")]:
        (root / "repos" / name).mkdir(parents=True)
        write_plugin(root / "repos" / name, name, requires)
    (root / "repos/evil/src/sc_evil/passwd").symlink_to("/etc/passwd")
    git("add", ".", cwd=root / "repos/evil")
    git("commit", "-q", "-m", "a link out", cwd=root / "repos/evil")
    index = root / "site" / "index.json"  # served over HTTP on 127.0.0.1 below
    index.parent.mkdir()
    index.write_text(json.dumps({"plugins": [
        {"name": "gamma", "source": (root / "repos/gamma").as_uri(),
         "description": "Gamma rays for your pixels", "topics": ["colour"]}]}))
    site = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler,
                                                          directory=str(index.parent)))
    threading.Thread(target=site.serve_forever, daemon=True).start()
    index_url = f"http://127.0.0.1:{site.server_port}/index.json"
    data = root / "data"
    env = {**os.environ, "STABLECORE_DATA_DIR": str(data), "COLUMNS": "250",
           "STABLECORE_UV_ARGS": f"--no-index,--find-links,{wheels},--no-build-isolation",
           "STABLECORE_PLUGIN_INDEXES": f"{index_url},http://127.0.0.1:9/index.json",
           "STABLECORE_PLUGIN_INDEX_GITHUB": "false", "STABLECORE_PORT": "9"}
    yield World(root, Path(sys.executable), env, data, site)
    site.shutdown()
    subprocess.run([uv.find_uv_bin(), "pip", "uninstall", "--python", sys.executable,
                    *TEST_DISTS], capture_output=True)


def run_job(server: ServerProcess, spec: str) -> str:
    with server.client() as c:
        job = c.run(spec)
        assert job["state"] == "succeeded", job["error"]
        return c.http.get(f"/api/artifacts/{job['outputs']['text']['id']}").text


def test_conflicts_are_refused_and_isolation_lets_both_run(world: World) -> None:
    world.ok("install", world.repo("alpha").as_uri())
    assert world.registry()["alpha"]["commit"] == git("rev-parse", "HEAD", cwd=world.repo("alpha"))

    refused = world.cli("install", world.repo("beta").as_uri())
    assert refused.returncode == 1
    assert ("beta requires scdep>=2, but scdep==1.0 is pinned because stablecore-alpha "
            "needs it") in refused.stderr
    assert "--isolated" in refused.stderr
    assert "beta" not in world.registry()

    world.ok("install", world.repo("beta").as_uri(), "--isolated")
    assert world.registry()["beta"]["env"].endswith("envs/beta")
    with ServerProcess(world.data, python=str(world.python), **_uv(world)) as server:
        assert run_job(server, "alpha.which") == "scdep 1.0 0.1.0"
        assert run_job(server, "beta.which") == "scdep 2.0 0.1.0"  # its own env, same server
        workers = {w["name"]: w for w in server.client().workers()}
        assert workers["w-beta"]["python"].startswith(str(world.data / "plugins/envs/beta"))
        assert workers["w0"]["python"] == sys.executable


def _uv(world: World) -> dict[str, str]:
    return {"uv_args": world.env["STABLECORE_UV_ARGS"]}


def test_update_to_a_new_commit_and_roll_back_a_broken_one(world: World) -> None:
    if "alpha" not in world.registry():
        world.ok("install", world.repo("alpha").as_uri())
    new = write_plugin(world.repo("alpha"), "alpha", "scdep==1.0", suffix=" v2")
    result = world.ok("update", "alpha")
    assert "incoming:" in result.stderr and "v2" in result.stderr
    assert world.registry()["alpha"]["commit"] == new

    write_plugin(world.repo("alpha"), "alpha", "scdep-missing==9", suffix=" broken")
    broken = world.cli("update", "alpha")
    assert broken.returncode == 1 and "rolled back" in broken.stderr
    assert world.registry()["alpha"]["commit"] == new
    with ServerProcess(world.data, python=str(world.python), **_uv(world)) as server:
        assert run_job(server, "alpha.which") == "scdep 1.0 0.1.0 v2"
    write_plugin(world.repo("alpha"), "alpha", "scdep==1.0", suffix=" v3")  # heal the repo


def test_freeze_and_restore_round_trip(world: World) -> None:
    for name, flags in [("alpha", []), ("beta", ["--isolated"])]:
        if name not in world.registry():
            world.ok("install", world.repo(name).as_uri(), *flags)
    lock = json.loads(world.ok("freeze").stdout)
    before = {p["name"]: p for p in lock["plugins"]}
    assert before["beta"]["isolated"] and not before["alpha"]["isolated"]
    (world.root / "plugins.lock").write_text(json.dumps(lock))
    world.ok("remove", "alpha")
    world.ok("remove", "beta")
    assert world.registry() == {}
    assert world.cli("remove", "alpha").returncode == 1
    world.ok("restore", str(world.root / "plugins.lock"))
    after = world.registry()
    assert {n: e["commit"] for n, e in after.items()} == {n: p["commit"] for n, p in before.items()}
    assert after["beta"]["env"] != "base" and after["alpha"]["env"] == "base"


@pytest.mark.parametrize("args, message", [
    (["install", "ext::sh -c touch% /tmp/pwned"], "not an allowed git URL"),
    (["install", "-uhelp"], "No such option"),
    (["install", "--", "-uhelp"], "not an allowed git URL"),
    (["install", "file:///tmp/x@--upload-pack=touch"], "is not a branch, tag or commit"),
    (["install", "file:///tmp/x@a..b"], "is not a branch, tag or commit"),
    (["new", "../escape"], "plugin name '../escape'"),
    (["remove", "Robert'); DROP"], "plugin name"),
])
def test_unsafe_input_is_refused(world: World, args: list[str], message: str) -> None:
    result = world.cli(*args)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_plugin_that_would_swap_a_core_dependency_is_refused(world: World) -> None:
    result = world.cli("install", world.repo("delta").as_uri())
    assert result.returncode == 1
    assert "delta requires pydantic<2, but pydantic==" in result.stderr
    assert "because stable-core needs it" in result.stderr
    assert "delta" not in world.registry()


def test_a_repo_with_a_symlink_out_is_refused(world: World) -> None:
    result = world.cli("install", world.repo("evil").as_uri())
    assert result.returncode == 1 and "points outside the plugin" in result.stderr
    assert "evil" not in world.registry()
    assert not (world.data / "plugins/src/evil").exists()


def test_index_search_info_and_install_by_name(world: World) -> None:
    found = world.ok("search", "gamma rays")
    assert "gamma" in found.stdout
    assert "unreachable" in found.stderr  # the dead index is reported, the rest still works
    assert json.loads(world.ok("info", "gamma").stdout)["topics"] == ["colour"]
    assert world.cli("install", "nosuchplugin").returncode == 1
    world.ok("install", "gamma")
    assert world.registry()["gamma"]["source"] == world.repo("gamma").as_uri()
    world.ok("remove", "gamma")
    world.site.shutdown()  # offline now: search answers from the cache, and says so
    world.site.server_close()
    offline = world.ok("search", "gamma")
    assert "gamma" in offline.stdout and "using 1 cached entries" in offline.stderr


def test_new_plugin_runs_through_a_real_server(world: World) -> None:
    result = world.ok("new", "mine", "--dir", str(world.root), "--description", "My first",
                      "--author", "Ada")
    assert "created" in result.stdout
    assert git("log", "--oneline", cwd=world.root / "mine").endswith("New stable-core plugin mine")
    assert world.registry()["mine"]["editable"] is True
    # the generated test passes, through a real server of its own
    test = subprocess.run([str(world.python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(world.root / "mine/tests")], capture_output=True, text=True,
                          env=world.env, timeout=300)
    assert test.returncode == 0, test.stdout + test.stderr
    world.ok("remove", "mine")


def test_install_over_the_api_streams_events_and_reloads(world: World) -> None:
    with ServerProcess(world.data, python=str(world.python), **_uv(world)) as server:
        r = httpx.post(server.url + "/api/plugins/install", json={"source": "ext::sh -c id"})
        assert r.status_code == 422
        ws = "ws" + server.url.removeprefix("http") + "/api/events"

        async def install() -> list[dict]:
            async with websockets.connect(ws) as conn:
                await asyncio.sleep(0.2)
                task = httpx.post(server.url + "/api/plugins/install",
                                  json={"source": world.repo("gamma").as_uri()}).json()["task"]
                events = []
                while True:
                    event = json.loads(await asyncio.wait_for(conn.recv(), 120))
                    if event["data"].get("task") == task:
                        events.append(event)
                        if event["type"] == "plugin.done":
                            return events

        events = asyncio.run(install())
        assert events[-1]["data"]["ok"] is True, [e["data"].get("line") for e in events]
        assert any("installed gamma" in e["data"].get("line", "") for e in events)
        with server.client() as c:
            for _ in range(200):
                if any(s["name"] == "gamma.which" for s in c.specs()):
                    break
                asyncio.run(asyncio.sleep(0.1))
            assert run_job(server, "gamma.which").startswith("scdep ")
        assert httpx.delete(server.url + "/api/plugins/nope").status_code == 404
