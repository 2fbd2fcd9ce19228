"""Intake: client requests checked against the catalog and the store, ready to queue.

Nothing is written here: `build_jobs` only reads and raises, so a list of requests is queued
whole (by the caller, in one transaction) or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stablecore.engine.catalog import Catalog
from stablecore.errors import InvalidParams, NotFound, StableCoreError
from stablecore.store import Artifact, Job, JobState, Store, new_id


@dataclass
class JobRequest:
    """One job as a client asks for it, before any check."""

    spec: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    session: str | None = None
    priority: int = 0


def build_jobs(catalog: Catalog, store: Store, requests: list[JobRequest], owner: str | None,
               default_timeout: float, seen_by: str | None = None) -> list[Job]:
    """The jobs for `requests`; an error names the bad field, prefixed `jobs[i].` in a list.

    `seen_by` limits the sessions and input artifacts to one owner's (None: anyone's); a job
    without a session goes to `owner`'s newest."""
    jobs, current = [], None
    for index, req in enumerate(requests):
        where = f"jobs[{index}]." if len(requests) > 1 else ""
        try:
            checked = catalog.check(req.spec, req.params, artifacts(store, req.inputs, seen_by))
            if req.session:
                session_id = store.get_session(req.session, seen_by)["id"]
            else:
                current = current or store.current_session(owner)["id"]
                session_id = current
        except StableCoreError as e:
            if where:
                e.message = f"{where}{e.message}"
                e.fields["field"] = where + str(e.fields.get("field", ""))
            raise
        jobs.append(Job(new_id("j"), checked.spec, checked.params, checked.inputs, session_id,
                        JobState.QUEUED, priority=req.priority, owner=owner,
                        model_key=checked.model_key, batch_key=checked.batch_key,
                        timeout=checked.timeout or default_timeout))
    return jobs


def artifacts(store: Store, inputs: dict[str, Any],
              seen_by: str | None = None) -> dict[str, Artifact | list[Artifact]]:
    """Input names -> the artifacts their ids name; an unknown id (or, with `seen_by`,
    another owner's) is the client's error."""
    arts: dict[str, Artifact | list[Artifact]] = {}
    for key, ref in inputs.items():
        ids = ref if isinstance(ref, list) else [ref]
        if not ids or not all(isinstance(i, str) for i in ids):
            raise InvalidParams(f"inputs.{key}: must be an artifact id, or a list of them",
                                field=f"inputs.{key}")
        try:
            found = [store.get_artifact(i, seen_by) for i in ids]
        except NotFound as e:
            raise InvalidParams(f"inputs.{key}: {e.message}", field=f"inputs.{key}") from None
        arts[key] = found if isinstance(ref, list) else found[0]
    return arts
