"""Running workflows: node jobs wait in the queue's table until their inputs exist.

A submitted graph becomes one `waiting` job per node, written with its run in one
transaction. `advance` is idempotent and is called after every change (a job of the run
ended, the server restarted): it releases each waiting node whose upstream nodes succeeded,
filling references with their outputs, reuses an earlier identical result when the cache
key matches, expands a `map` node into item jobs and gathers them, fails a node whose
upstream failed (naming it), and settles the run once every node has ended. So a `kill -9`
at any point loses nothing and runs no finished node again.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from stablecore.engine import saved
from stablecore.engine.catalog import Catalog
from stablecore.engine.intake import artifacts
from stablecore.engine.workflows import Graph, Node, Ref, cache_key, check_graph, refs_of
from stablecore.errors import InvalidParams, NotFound, StableCoreError
from stablecore.records import Job, JobState, new_id
from stablecore.store import Store
from stablecore.workflow_store import WorkflowStore


class Flows:
    def __init__(self, store: Store, catalog: Catalog, cancel_job: Callable[[str], Any],
                 default_timeout: float) -> None:
        self.store, self.catalog = store, catalog
        self.db = WorkflowStore(store)
        self.cancel_job = cancel_job
        self.default_timeout = default_timeout

    # --- submit and follow ------------------------------------------------------------------
    def submit(self, graph: Graph, session_id: str, owner: str | None = None,
               priority: int = 0, parent: str | None = None,
               seen_by: str | None = None) -> dict[str, Any]:
        """Check the whole graph, then write the run and its node jobs at once; nothing is
        queued when the graph is bad. `seen_by`: whose artifacts it may name (None: any)."""
        check_graph(graph, self.catalog, lambda a: self.store.get_artifact(a, seen_by).kind)
        for node in graph.nodes.values():
            self._fix_seed(node)
        run = {"id": new_id("w"), "name": graph.name, "graph": graph.model_dump(),
               "session_id": session_id, "owner": owner, "job_id": parent,
               "created": time.time()}
        jobs = [Job(new_id("j"), node.spec, node.params,
                    {k: _plain(v) for k, v in node.inputs.items()}, session_id,
                    JobState.WAITING, priority=priority, owner=owner, workflow_id=run["id"],
                    node=name, timeout=self.default_timeout)
                for name, node in graph.nodes.items()]
        self.db.add(run, jobs)
        return run

    def _fix_seed(self, node: Node) -> None:
        """A random seed (-1) is drawn now and kept in the run's graph: running that graph
        again reproduces the result (from the cache), while a new submit with -1 draws anew."""
        props = self.catalog.specs[node.spec]["params"].get("properties", {})
        if "seed" in props and "seed" not in node.links:
            seed = node.params.get("seed", props["seed"].get("default"))
            if seed is None or (isinstance(seed, int) and seed < 0):
                node.params["seed"] = secrets.randbelow(2**32)

    def public(self, workflow_id: str) -> dict[str, Any]:
        """The run with every node's state, job id, outputs and cache flag (map items too)."""
        run = self.db.get(workflow_id)
        nodes: dict[str, Any] = {}
        items: dict[str, list[dict[str, Any]]] = {}
        for job in self.db.jobs(workflow_id):
            view = {"job_id": job.id, "spec": job.spec, "state": str(job.state),
                    "outputs": job.outputs, "error": job.error, "cached": job.cached}
            name, _, index = (job.node or "").partition("[")
            if index:
                items.setdefault(name, []).append(view)
            else:
                nodes[name] = view
        for name, views in items.items():
            nodes[name]["items"] = views
        return {**run, "nodes": nodes}

    def cancel(self, workflow_id: str) -> None:
        """Cancel every unfinished node; the run ends `cancelled` once they have."""
        for job in self.db.jobs(workflow_id):
            if not job.state.finished:
                self.cancel_job(job.id)
        self.advance(workflow_id)

    # --- advance ----------------------------------------------------------------------------
    def advance(self, workflow_id: str) -> None:
        """Release, reuse, expand, gather or fail every node that can move; settle the run."""
        run = self.db.get(workflow_id)
        if run["state"] != "running":
            return
        graph = Graph.model_validate(run["graph"])
        changed = True
        while changed:
            changed = False
            jobs = self.db.jobs(workflow_id)
            by_node = {j.node: j for j in jobs}
            for job in jobs:
                if job.state == JobState.WAITING:
                    changed |= self._step(graph, job, by_node)
        jobs = self.db.jobs(workflow_id)
        if all(j.state.finished for j in jobs):
            states = {j.state for j in jobs if "[" not in (j.node or "")}
            state = ("cancelled" if JobState.CANCELLED in states else
                     "failed" if JobState.FAILED in states else "succeeded")
            failed = [j for j in jobs if j.state == JobState.FAILED and "[" not in (j.node or "")]
            self.db.finish(workflow_id, state, failed[0].error if failed else None)
            if run["job_id"]:
                self._settle_parent(run, {j.node: j for j in jobs}, state)

    def _step(self, graph: Graph, job: Job, by_node: dict[str | None, Job]) -> bool:
        """Move one waiting job if it can; True if it moved (or spawned items)."""
        name, _, index = (job.node or "").partition("[")
        node = graph.nodes[name]
        if index:  # a map item: its params and inputs were resolved when it was made
            return self._release(job, node, job.params, job.inputs)
        upstream = {ref.node for _, ref in refs_of(node)}
        ends = {u: by_node[u].state for u in upstream}
        bad = sorted(u for u, s in ends.items() if s in (JobState.FAILED, JobState.CANCELLED))
        if bad:
            self.store.finish(job.id, JobState.FAILED,
                              error=f"upstream node {bad[0]!r} {ends[bad[0]]}")
            return True
        if any(s != JobState.SUCCEEDED for s in ends.values()):
            return False
        try:
            inputs = {k: _resolve(v, by_node) for k, v in node.inputs.items()}
            params = {**node.params, **{k: self._link_value(ref, by_node)
                                        for k, ref in node.links.items()
                                        if self._kind(ref, graph) != "numbers"}}
        except StableCoreError as e:
            self.store.finish(job.id, JobState.FAILED, error=f"node {name!r}: {e.message}")
            return True
        if node.map is not None:
            return self._map(graph, job, node, params, inputs, by_node)
        return self._release(job, node, params, inputs)

    def _release(self, job: Job, node: Node, params: dict[str, Any],
                 inputs: dict[str, Any]) -> bool:
        """Queue the job with its resolved params and inputs, or reuse a cached result."""
        try:
            checked = self.catalog.check(job.spec, params, artifacts(self.store, inputs))
        except StableCoreError as e:
            self.store.finish(job.id, JobState.FAILED, error=f"node {job.node!r}: {e.message}")
            return True
        spec = self.catalog.specs[job.spec]
        key = None
        if node.cache and spec.get("deterministic", True):
            shas = {k: [self.store.get_artifact(i).sha256 for i in v] if isinstance(v, list)
                    else self.store.get_artifact(v).sha256 for k, v in checked.inputs.items()}
            key = cache_key(spec, checked.params, shas)
            hit = self.db.cached(key, job.owner)
            if hit is not None:
                self.store.finish(job.id, JobState.SUCCEEDED, outputs=hit.outputs,
                                  params=hit.params, cached=True)
                return True
        self.db.release(job, checked.params, checked.inputs, checked.model_key,
                        checked.batch_key, key)
        return True

    def _map(self, graph: Graph, job: Job, node: Node, params: dict[str, Any],
             inputs: dict[str, Any], by_node: dict[str | None, Job]) -> bool:
        """Make one item job per element of the mapped input, or gather them once all ended."""
        assert node.map is not None
        items = [j for n, j in by_node.items() if n and n.startswith(f"{job.node}[")]
        if not items:
            values = inputs[node.map]
            values = values if isinstance(values, list) else [values]
            per_item = {k: self._numbers(ref, by_node, len(values))
                        for k, ref in node.links.items() if self._kind(ref, graph) == "numbers"}
            made = [Job(new_id("j"), job.spec,
                        {**params, **{k: v[i] for k, v in per_item.items()}},
                        {**inputs, node.map: value}, job.session_id, JobState.WAITING,
                        priority=job.priority, owner=job.owner, workflow_id=job.workflow_id,
                        node=f"{job.node}[{i}]", timeout=job.timeout)
                    for i, value in enumerate(values)]
            if made:
                self.store.add_jobs(made)
                return True
        if not all(i.state.finished for i in items):
            return False
        items.sort(key=lambda i: int((i.node or "").split("[")[1].rstrip("]")))
        failed = [i for i in items if i.state != JobState.SUCCEEDED]
        if failed:
            self.store.finish(job.id, JobState.FAILED, error=f"item {failed[0].node}: "
                              f"{failed[0].error or failed[0].state}")
            return True
        names = self.catalog.specs[job.spec]["outputs"]
        outputs = {out: [(i.outputs or {}).get(out) for i in items] for out in names}
        self.store.finish(job.id, JobState.SUCCEEDED, outputs=outputs)
        return True

    # --- values from upstream ---------------------------------------------------------------
    def _kind(self, ref: Ref, graph: Graph) -> str:
        return self.catalog.specs[graph.nodes[ref.node].spec]["outputs"][ref.output]["kind"]

    def _link_value(self, ref: Ref, by_node: dict[str | None, Job]) -> Any:
        out = (by_node[ref.node].outputs or {}).get(ref.output)
        if out is None:
            raise InvalidParams(f"node {ref.node!r} gave no {ref.output!r}")
        if isinstance(out, list):
            return [self._read(o) for o in out]
        return self._read(out)

    def _read(self, out: dict[str, Any]) -> Any:
        if out.get("kind") == "json":
            if out.get("value") is not None:
                return out["value"]
            return json.loads(self.store.artifact_file(self.store.get_artifact(out["id"]))
                              .read_text())
        return self.store.artifact_file(self.store.get_artifact(out["id"])).read_text()

    def _numbers(self, ref: Ref, by_node: dict[str | None, Job], n: int) -> list[float]:
        """One value per item from a numbers output: its `column` (else the first), row i."""
        doc = json.loads(self._read((by_node[ref.node].outputs or {})[ref.output]))
        rows, columns = doc["values"], doc.get("columns") or []
        col = columns.index(ref.column) if ref.column in columns else 0
        values = [row[col] if isinstance(row, list) else row for row in rows]
        if len(values) < n:
            raise InvalidParams(f"node {ref.node!r} gave {len(values)} values for {n} items")
        return values[:n]

    # --- saved workflows as jobs ------------------------------------------------------------
    def save(self, body: saved.SavedWorkflow, owner: str | None = None) -> None:
        saved.check_saved(body, self.catalog)
        self.db.save(body.name, body.graph.model_dump(), body.expose.model_dump(),
                     body.description, owner)
        self.refresh_saved()

    def delete(self, name: str) -> None:
        self.db.delete(name)
        self.refresh_saved()

    def refresh_saved(self) -> None:
        """Saved workflows join the catalog as `workflow.<name>` jobs, once their jobs are."""
        specs = [s for s in (saved.saved_spec(_saved_model(w), self.catalog)
                             for w in self.db.saved()) if s is not None]
        if not specs:  # no saved workflow: no empty "workflow" plugin in the list
            self.catalog.forget(saved.PLUGIN)
            return
        self.catalog.update(saved.PLUGIN, specs, [{
            "name": saved.PLUGIN, "module": "stablecore.engine.saved", "version": "",
            "jobs": [s["name"] for s in specs], "error": None, "job_errors": {}, "models": []}])

    def saved_graph(self, job: Job) -> Graph:
        """The graph a `workflow.<name>` job runs, checked before the job is accepted."""
        name = job.spec.split(".", 1)[1]
        found = self.db.saved_one(name)
        if found is None:
            raise NotFound(f"no saved workflow {name!r}", field="spec")
        graph = saved.graph_for(_saved_model(found), job.params, job.inputs)
        check_graph(graph, self.catalog, lambda a: self.store.get_artifact(a).kind)
        return graph

    def _settle_parent(self, run: dict[str, Any], by_node: dict[Any, Job], state: str) -> None:
        """The `workflow.<name>` job that started this run ends with it, with the outputs
        its saved workflow exposes."""
        parent = self.store.get_job(run["job_id"])
        if parent.state.finished:
            return
        if state != "succeeded":
            error = self.db.get(run["id"])["error"] or f"workflow {run['id']} {state}"
            self.store.finish(parent.id, JobState(state), error=error)
            return
        saved = self.db.saved_one(run["name"])
        outputs = {}
        for out, target in (saved["expose"].get("outputs") or {}).items() if saved else ():
            node, _, name = target.partition(".")
            outputs[out] = (by_node[node].outputs or {}).get(name)
        self.store.finish(parent.id, JobState.SUCCEEDED, outputs=outputs)


def _saved_model(row: dict[str, Any]) -> saved.SavedWorkflow:
    return saved.SavedWorkflow(name=row["name"], description=row["description"] or "",
                               graph=row["graph"], expose=row["expose"])


def _plain(value: Any) -> Any:
    """An input as stored on a waiting job: references as dicts."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value.model_dump(exclude_none=True) if isinstance(value, Ref) else value


def _resolve(value: Any, by_node: dict[str | None, Job]) -> Any:
    """References replaced by the artifact ids of upstream outputs (lists flatten in order)."""
    if isinstance(value, list):
        out: list[str] = []
        for v in value:
            got = _resolve(v, by_node)
            out += got if isinstance(got, list) else [got]
        return out
    if isinstance(value, Ref):
        ref = (by_node[value.node].outputs or {}).get(value.output)
        if ref is None:
            raise NotFound(f"node {value.node!r} gave no {value.output!r}")
        return [r["id"] for r in ref] if isinstance(ref, list) else ref["id"]
    return value
