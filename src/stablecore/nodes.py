"""Nodes: other machines whose workers join this server's pool over SSH.

`Nodes.add` is `stable-core nodes add` (and `POST /api/nodes`), in numbered steps:
1. trust the host key (known, or confirmed by the user) and log in;
2. check the machine: Python, free disk, GPUs; say everything that is missing at once;
3. install the same stable-core and plugins into a venv there (`bundle.py`), unless the venv
   already holds exactly that;
4. put the model files those plugins declare in the node's cache: pulled there from their
   sources, or sent from ours (`node_models.py`);
5. start one worker per GPU (or `cpu_workers`) on SSH channels; they join the pool.
Steps 1-2 answer the request; 3-5 run on, reported as `node.log`, then `node.up` or
`node.failed`. Records live in data/nodes.json; at server start every node reconnects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shlex
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from stablecore import bundle as bundles
from stablecore import cloud as providers
from stablecore import node_models, node_setup
from stablecore.config import Settings
from stablecore.engine.engine import Engine
from stablecore.engine.link import WorkerState
from stablecore.engine.ssh import SshLink, SshNode, Target, forget_host_key, trust_host_key
from stablecore.errors import Conflict, InvalidParams, NodeError, NotFound, StableCoreError
from stablecore.manager.installer import Manager
from stablecore.modelfiles import models_cache
from stablecore.store import Store

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,39}$")
MIN_PYTHON = (3, 11)
MIN_DISK_GB = 2.0
UP_WAIT_S = 300.0
LOG_LINES = 1000
IDLE_CHECK_S = 1.0
MODEL_CACHE = "model-cache"  # in the node's folder: what STABLECORE_MODELS_CACHE is there


class CloudInfo(BaseModel):
    """A rented machine: which provider and instance, its price, when to stop it."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["runpod", "vast"]
    instance: str
    price_per_hour: float = Field(ge=0)
    idle_stop_min: float = Field(20, ge=0, description="0: never")
    started: float = Field(description="when the rental began, seconds since the epoch")


class NodeRequest(BaseModel):
    """What `nodes add` asks for; the API body of POST /api/nodes."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="ssh://user@host[:port]")
    name: str | None = Field(None, description="default: the host name")
    key: str | None = Field(None, description="private key file on the server's machine "
                            "(default: the server user's SSH keys and agent)")
    host_key: str | None = Field(None, description="the host key fingerprint you checked, "
                                 "SHA256:...")
    accept_new_host_key: bool = Field(False, description="trust a host key seen the first time")
    gpus: str = Field("all", description="'all' or a comma list of GPU indexes")
    cpu_workers: int = Field(1, ge=0, le=64, description="workers on a machine without GPUs")
    plugins: list[str] | None = Field(None, description="plugins to install and run there "
                                      "(default: all of this server's)")
    python: str = Field("python3", description="the Python on the node that makes the venv")
    remote_dir: str = Field("~/.stablecore", description="folder on the node for the venv, "
                            "caches and scratch files")
    system_site_packages: bool = Field(False, description="the venv also sees that Python's "
                                       "packages (e.g. torch of a GPU image)")
    models: Literal["pull", "push", "skip"] = Field(
        "pull", description="the model files the plugins declare: 'pull' them on the node from "
        "their sources, 'push' those this server's cache has over SSH (the node pulls the "
        "rest), or 'skip'")
    cloud: CloudInfo | None = Field(None, description="a rented machine (`stable-core "
                                    "cloud ... up`): destroyed once idle")

    @field_validator("url", "name", "key", "host_key", "gpus", "python", "remote_dir")
    @classmethod
    def printable(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Text that goes into SSH commands, paths and logs: printable UTF-8 only (a lone
        surrogate or a control character would fail later, as a 500)."""
        if value is None:
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{info.field_name} is not valid UTF-8 text") from None
        if not value.isprintable():
            raise ValueError(f"{info.field_name} contains control characters")
        return value



@dataclass
class NodeRecord:
    name: str
    url: str
    key: str | None = None
    host_key: str = ""
    gpus: str = "all"
    cpu_workers: int = 1
    plugins: list[str] = field(default_factory=list)
    python: str = "python3"
    remote_dir: str = "~/.stablecore"
    system_site_packages: bool = False
    models: str = "pull"  # pull, push or skip
    dir: str = ""  # remote_dir as the node resolved it
    devices: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    cloud: dict[str, Any] | None = None  # CloudInfo
    isolated: list[str] = field(default_factory=list)  # of plugins: each in DIR/envs/NAME


@dataclass(eq=False)
class Node:
    record: NodeRecord
    ssh: SshNode
    links: list[SshLink] = field(default_factory=list)
    state: str = "adding"  # adding, installing, starting, up, failed (and what links say)
    error: str | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    bytes_installed: int = 0
    bytes_models: int = 0  # model files sent from our cache by the last `nodes add`


class Nodes:
    def __init__(self, settings: Settings, store: Store, engine: Engine) -> None:
        self.settings, self.store, self.engine = settings, store, engine
        self.file = settings.data_dir / "nodes.json"
        self.known_hosts = settings.data_dir / "known_hosts"
        self.wheels = settings.data_dir / "nodes" / "wheels"
        self.nodes: dict[str, Node] = {}

    # --- records --------------------------------------------------------------------------
    def _records(self) -> list[NodeRecord]:
        if not self.file.is_file():
            return []
        return [NodeRecord(**r) for r in json.loads(self.file.read_text())]

    def _save(self) -> None:
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(n.record) for n in self.nodes.values()], indent=2))
        os.replace(tmp, self.file)

    def get(self, name: str) -> Node:
        node = self.nodes.get(name)
        if node is None:
            raise NotFound(f"no node {name!r}", field="name")
        return node

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Every recorded node's workers join the pool; unreachable ones are retried."""
        for record in self._records():
            node = self._node(record)
            node.state = "starting"
            self.nodes[record.name] = node
            node.links = self._links(node)
            self.engine.spawn(self.engine.pool.add(node.links))
        self.engine.spawn(self._watch_idle())

    def _node(self, record: NodeRecord) -> Node:
        node = Node(record, SshNode(record.name, Target.parse(record.url), self.known_hosts,
                                    record.key))
        node.ssh.log = lambda line: self._log(node, line)
        return node

    def _log(self, node: Node, line: str) -> None:
        node.log.append(line)
        with self.store.transaction():
            self.store.emit("node.log", node=node.record.name, line=line)

    def _emit(self, type: str, node: Node, **data: Any) -> None:
        with self.store.transaction():
            self.store.emit(type, node=node.record.name, **data)

    # --- add --------------------------------------------------------------------------------
    async def add(self, req: NodeRequest) -> Node:
        """Steps 1-2 now (their errors answer the request); 3-4 in the background."""
        target = Target.parse(req.url)
        name = req.name or target.host.lower().replace(":", "-")
        if not NAME_RE.match(name):
            raise InvalidParams(f"node name {name!r}: use lower-case letters, digits, '.', '_' "
                                "and '-' (pass --name)", field="name")
        old = self.nodes.get(name)
        if old is not None and old.record.url != target.url:
            raise Conflict(f"node {name!r} is {old.record.url}; remove it first or pick "
                           "another --name", field="name")
        if req.key and not Path(req.key).expanduser().is_file():
            raise InvalidParams(f"key file {req.key} not found on the server's machine",
                                field="key")
        gpus = self._gpu_list(req.gpus)
        # 1. the host key, then the login
        fingerprint = await trust_host_key(target, self.known_hosts, req.host_key,
                                           req.accept_new_host_key)
        key = str(Path(req.key).expanduser()) if req.key else None
        ssh = SshNode(name, target, self.known_hosts, key)
        await ssh.connection()
        # 2. the machine
        facts = await self._check(ssh, req, gpus)
        found = [g["index"] for g in facts["gpus"]]
        devices = ([f"cuda:{i}" for i in (found if gpus is None else gpus)]
                   or ["cpu"] * req.cpu_workers)
        if old is not None:  # the same machine again: its workers restart on what we install
            await self._drop_links(old)
            old.ssh.close()
        record = NodeRecord(name, target.url, key, fingerprint, req.gpus, req.cpu_workers,
                            req.plugins or [], req.python, req.remote_dir,
                            req.system_site_packages, req.models, facts["dir"], devices, facts,
                            time.time(), req.cloud.model_dump() if req.cloud else None)
        node = Node(record, ssh)
        ssh.log = lambda line: self._log(node, line)
        self.nodes[name] = node
        self._save()
        self._emit("node.added", node, url=target.url, host_key=fingerprint, devices=devices)
        self.engine.spawn(self._install_and_start(node, req.plugins))
        return node

    @staticmethod
    def _gpu_list(gpus: str) -> list[int] | None:
        if gpus.strip() == "all":
            return None
        try:
            return [int(g) for g in gpus.split(",") if g.strip()]
        except ValueError:
            raise InvalidParams(f"--gpus {gpus!r}: 'all' or indexes like 0,1",
                                field="gpus") from None

    async def _check(self, ssh: SshNode, req: NodeRequest, gpus: list[int] | None
                     ) -> dict[str, Any]:
        """What the machine has; one error naming everything it lacks."""
        py = shlex.quote(req.python)
        found = await ssh.run(f"command -v {py}", check=False)
        if found.exit_status != 0:
            raise NodeError(f"{ssh.target.url} has no Python at {req.python!r}: install Python "
                            f"{'.'.join(map(str, MIN_PYTHON))} or newer there, or pass "
                            "--python /path/to/python3", field="python")
        source = Path(node_setup.__file__).read_text()
        result = await ssh.run(f"{py} - check {shlex.quote(req.remote_dir)}", input=source,
                               check=False, timeout=60)
        if result.exit_status != 0:
            raise NodeError(f"checking {ssh.target.url} with {req.python} failed: "
                            f"{str(result.stderr).strip()[-300:]}", field="python")
        facts = json.loads(str(result.stdout).strip().splitlines()[-1])
        facts["dir"] = (await ssh.run(f"{py} -c 'import os,sys; print(os.path.abspath(os.path."
                                      f"expanduser(sys.argv[1])))' "
                                      f"{shlex.quote(req.remote_dir)}")).stdout.strip()
        problems = []
        if tuple(facts["version"]) < MIN_PYTHON:
            problems.append(f"Python {'.'.join(map(str, MIN_PYTHON))} or newer (found "
                            f"{facts['python']} at {req.python}; pass --python)")
        if facts["disk_free_gb"] < MIN_DISK_GB:
            problems.append(f"{MIN_DISK_GB:g} GB free in {req.remote_dir} (has "
                            f"{facts['disk_free_gb']:.1f} GB)")
        have = {g["index"] for g in facts["gpus"]}
        if gpus is not None and set(gpus) - have:
            problems.append(f"GPUs {sorted(set(gpus) - have)} (nvidia-smi lists "
                            f"{sorted(have) or 'none'})")
        if gpus is None and not have and not req.cpu_workers:
            problems.append("a GPU (nvidia-smi lists none; pass --cpu-workers N for CPU "
                            "workers)")
        if problems:
            raise NodeError(f"{ssh.target.url} cannot run workers; it needs: "
                            + "; ".join(problems), field="url")
        return facts

    async def _install_and_start(self, node: Node, plugins: list[str] | None) -> None:
        try:
            node.state = "installing"
            await self._install(node, plugins)
            if node.record.models != "skip":
                node.state = "models"
                await self._models(node)
            node.state = "starting"
            node.links = self._links(node)
            await self.engine.pool.add(node.links)
            deadline = time.monotonic() + UP_WAIT_S
            while any(link.state != WorkerState.IDLE for link in node.links):
                if time.monotonic() > deadline:
                    raise NodeError(f"workers on {node.record.name} did not report within "
                                    f"{UP_WAIT_S:g} s; see `stable-core nodes logs "
                                    f"{node.record.name}`")
                await asyncio.sleep(0.1)
            node.state = "up"
            self._emit("node.up", node, workers=[link.name for link in node.links])
        except StableCoreError as e:
            await self._failed(node, e.message)
        except Exception as e:
            await self._failed(node, f"{type(e).__name__}: {e}")

    async def _failed(self, node: Node, error: str) -> None:
        node.state, node.error = "failed", error
        self._log(node, f"failed: {error}")
        await self._drop_links(node)
        self._emit("node.failed", node, error=error)

    async def _install(self, node: Node, plugins: list[str] | None) -> None:
        """Step 3: ship wheels and install them with uv, unless the venv has this stamp."""
        r, ssh = node.record, node.ssh
        isolated = {name: Path(e.path) for name, e in
                    Manager(self.settings.plugins_home).entries().items() if e.env != "base"}
        bundle = await asyncio.to_thread(bundles.make_bundle, self.wheels, plugins,
                                         lambda line: self._log(node, line), isolated)
        r.plugins = bundle.plugins
        r.isolated = [i.plugin for i in bundle.isolated]
        self._save()
        stamp = bundle.stamp(r.python, r.system_site_packages)
        remote_wheels: dict[Path, str] = {}
        conn = await ssh.connection()
        async with conn.start_sftp_client() as sftp:
            for wheel in bundle.wheels + [i.wheel for i in bundle.isolated]:
                folder = f"{r.dir}/wheels/{bundles._file_sha(wheel)[:16]}"
                remote = remote_wheels[wheel] = f"{folder}/{wheel.name}"
                if await sftp.exists(remote):
                    continue
                await sftp.makedirs(folder, exist_ok=True)
                await sftp.put(str(wheel), remote)
                node.bytes_installed += wheel.stat().st_size
                self._log(node, f"sent {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB)")
        setup = f"{r.dir}/node_setup.py"
        async with conn.start_sftp_client() as sftp:
            await sftp.put(node_setup.__file__, setup)
        plan = {"dir": r.dir, "system_site_packages": r.system_site_packages}
        state = json.loads((await self._setup(node, "venv", plan)).splitlines()[-1])
        if state["stamp"] == stamp:
            self._log(node, f"{r.dir}/venv already has this stable-core and plugin set: "
                      "reusing it")
            return
        need = bundles.missing(bundle.wheel_requirements(), state["installed"],
                               state["environment"])
        plan.update(stamp=None if bundle.isolated else stamp, missing=need,
                    wheels=[remote_wheels[w] for w in bundle.wheels],
                    uv_args=self.settings.uv_args)
        await self._setup(node, "install", plan)
        base = [p for p in bundle.plugins if p not in r.isolated]
        self._log(node, f"installed stable-core and {', '.join(base) or 'no plugins'} into "
                  f"{r.dir}/venv")
        if bundle.isolated:  # each env sees the venv: what it has now is not needed again
            state = json.loads((await self._setup(node, "venv", plan)).splitlines()[-1])
            envs = [{"plugin": i.plugin, "wheel": remote_wheels[i.wheel],
                     "missing": bundles.missing(i.requirements, state["installed"],
                                                state["environment"])}
                    for i in bundle.isolated]
            await self._setup(node, "isolated", {**plan, "stamp": stamp, "envs": envs})
            self._log(node, f"installed {', '.join(r.isolated)} into environments of their "
                      f"own in {r.dir}/envs")

    async def _models(self, node: Node) -> None:
        """Step 4: the declared model files into the node's cache, before its workers start."""
        r = node.record
        conn = await node.ssh.connection()
        base = [p for p in r.plugins if p not in r.isolated]
        groups = [(f"{r.dir}/venv/bin/python", base)] if base else []
        groups += [(f"{r.dir}/envs/{p}/bin/python", [p]) for p in r.isolated]
        node.bytes_models = 0
        for python, plugins in groups:  # an isolated plugin is only importable in its env
            done = await node_models.provide(
                conn, python, f"{r.dir}/{MODEL_CACHE}", plugins, r.models == "push",
                models_cache(os.environ), lambda line: self._log(node, line))
            node.bytes_models += done.bytes_pushed

    async def _setup(self, node: Node, command: str, plan: dict[str, Any]) -> str:
        """Run node_setup.py there, its output lines as `node.log` events; its last line."""
        r = node.record
        arg = base64.b64encode(json.dumps(plan).encode()).decode()
        conn = await node.ssh.connection()
        proc = await conn.create_process(
            f"{shlex.quote(r.python)} {shlex.quote(r.dir + '/node_setup.py')} {command} {arg}",
            stderr=asyncssh.STDOUT)
        last = ""
        async for line in proc.stdout:
            if not line.strip():
                continue
            last = line.rstrip()
            if not last.startswith("{"):
                self._log(node, last)
        await proc.wait()
        if proc.exit_status != 0:
            raise NodeError(f"{command} on {r.name} failed: {last}")
        return last

    def _links(self, node: Node) -> list[SshLink]:
        """Step 5: one worker per device, in the node's venv, on a channel each; and one per
        plugin installed `--isolated`, in its env, on the first device (as here)."""
        r = node.record
        base = [p for p in r.plugins if p not in r.isolated]
        links = []
        if base or not r.isolated:
            links += [self._link(node, f"w{i}", device, "venv", base)
                      for i, device in enumerate(r.devices)]
        links += [self._link(node, f"w-{p}", r.devices[0], f"envs/{p}", [p])
                  for p in r.isolated]
        return links

    def _link(self, node: Node, worker: str, device: str, env_dir: str, plugins: list[str]
              ) -> SshLink:
        r, s = node.record, self.settings
        name = f"{r.name}/{worker}"
        command = [f"{r.dir}/{env_dir}/bin/python", "-m", "stablecore.worker", "--name", name,
                   "--device", "cuda:0" if device.startswith("cuda") else device,
                   "--tmp", f"{r.dir}/tmp/{worker}", "--blobs", f"{r.dir}/blobs",
                   "--send-outputs", "--cache-mb", str(s.cache_budget_mb),
                   "--max-input-mpx", str(s.max_input_mpx)]
        if plugins:
            command += ["--plugins", ",".join(plugins)]
        env = {"STABLECORE_MODELS_HOME": f"{r.dir}/models",
               "STABLECORE_MODELS_CACHE": f"{r.dir}/{MODEL_CACHE}"}
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        return SshLink(name, device, node=node.ssh, command=command, env=env,
                       tmpdir=s.data_dir / "tmp" / r.name / worker)

    # --- remove, list ------------------------------------------------------------------------
    async def remove(self, name: str, uninstall: bool = False) -> None:
        node = self.get(name)
        await self._drop_links(node)
        if uninstall and node.record.dir:
            with contextlib.suppress(StableCoreError):
                await node.ssh.run(f"rm -rf {shlex.quote(node.record.dir)}", timeout=120)
        node.ssh.close()
        forget_host_key(self.known_hosts, node.ssh.target)
        del self.nodes[name]
        self._save()
        self._emit("node.removed", node, uninstalled=uninstall)

    async def _drop_links(self, node: Node) -> None:
        """Stop the node's workers; the jobs they ran go back to the queue."""
        for link in node.links:
            link.lost = True
        await self.engine.pool.remove([link.name for link in node.links],
                                      self.engine.catalog.forget)
        node.links = []

    # --- rented machines ----------------------------------------------------------------------
    async def _watch_idle(self) -> None:
        """Destroy a rented machine whose node had no job for its `idle_stop_min`."""
        while True:
            await asyncio.sleep(IDLE_CHECK_S)
            for node in list(self.nodes.values()):
                cloud = node.record.cloud
                if not cloud or not cloud.get("idle_stop_min") or node.state != "up":
                    continue
                state = self.public(node)
                if state["state"] == "up" and not state["jobs_running"] \
                        and state["idle_s"] > cloud["idle_stop_min"] * 60:
                    await self.stop_rental(node, f"no job for {cloud['idle_stop_min']:g} min")

    async def stop_rental(self, node: Node, reason: str) -> None:
        info = node.record.cloud
        assert info is not None
        node.state = "stopping"
        self._log(node, f"destroying {info['provider']} instance {info['instance']}: {reason}")
        try:
            api = providers.provider(info["provider"])
            await asyncio.to_thread(api.down, info["instance"])
        except StableCoreError as e:
            node.state = "up"
            self._log(node, f"could not destroy it: {e.message}")
            return
        cost = self._cost(info)
        self._emit("cloud.stopped", node, provider=info["provider"], instance=info["instance"],
                   reason=reason, cost=cost)
        await self.remove(node.record.name)

    @staticmethod
    def _cost(info: dict[str, Any]) -> float:
        return round(info["price_per_hour"] * (time.time() - info["started"]) / 3600, 4)

    def public(self, node: Node) -> dict[str, Any]:
        r = node.record
        workers = [link.public() for link in node.links]
        states = {link.state for link in node.links}
        state = node.state
        if state in ("up", "starting") and node.links:
            state = ("up" if states <= {WorkerState.IDLE, WorkerState.BUSY}
                     else "connecting" if WorkerState.DOWN in states else "starting")
        idle = [link.idle_since for link in node.links]
        return {"name": r.name, "url": r.url, "state": state, "error": node.error,
                "host_key": r.host_key, "devices": r.devices, "plugins": r.plugins,
                "gpus": r.facts.get("gpus", []), "python": r.facts.get("python"),
                "dir": r.dir, "workers": [w["name"] for w in workers],
                "jobs_running": sum(len(w["jobs"]) for w in workers),
                "jobs_done": sum(w.get("jobs_done", 0) for w in workers),
                "models": sorted({m["key"] for w in workers for m in w["models"]}),
                "bytes_sent": sum(w["blob_bytes_sent"] for w in workers),
                "bytes_received": sum(w["bytes_received"] for w in workers),
                "bytes_installed": node.bytes_installed, "bytes_models": node.bytes_models,
                "models_mode": r.models,
                "idle_s": (time.monotonic() - max(idle)) if idle and all(idle) else 0.0,
                "created": r.created,
                "cloud": {**r.cloud, "cost": self._cost(r.cloud)} if r.cloud else None}

    def logs(self, name: str) -> list[str]:
        node = self.get(name)
        lines = list(node.log)
        for link in node.links:
            lines += [f"[{link.name}] {line}" for line in link.console]
        return lines
