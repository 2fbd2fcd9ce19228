"""Which idle worker runs which queued jobs: priority, then age; model affinity; batching.

A pure function of the queue head and the idle workers, so tests drive it step by step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stablecore.store import QueuedJob


@dataclass
class WorkerView:
    """What the scheduler needs to know of a worker."""

    name: str
    specs: set[str]
    models: set[str] = field(default_factory=set)


def plan(queue: Sequence[QueuedJob], idle: Sequence[WorkerView], batch_max: dict[str, int],
         ) -> list[tuple[WorkerView, list[QueuedJob]]]:
    """Assign the head of `queue` (already in priority/age order) to `idle` workers.

    A job goes to an idle worker that holds its model; failing that, to the idle worker whose
    cached models the rest of the queue wants least, then the one holding fewest models.
    Queued jobs with the job's batch key join it, up to the spec's `batch_max`.
    """
    free = list(idle)
    taken: set[str] = set()
    wanted = {j.model_key for j in queue if j.model_key}
    out: list[tuple[WorkerView, list[QueuedJob]]] = []
    for job in queue:
        if not free:
            break
        if job.id in taken:
            continue
        able = [w for w in free if job.spec in w.specs]
        if not able:
            continue
        warm = [w for w in able if job.model_key and job.model_key in w.models]
        worker = warm[0] if warm else min(able, key=lambda w: (len(w.models & wanted),
                                                               len(w.models)))
        batch = [job]
        if job.batch_key is not None:
            limit = batch_max.get(job.spec, 1)
            for other in queue:
                if len(batch) >= limit:
                    break
                if other.batch_key == job.batch_key and other.id not in taken and other is not job:
                    batch.append(other)
        taken.update(j.id for j in batch)
        free.remove(worker)
        out.append((worker, batch))
    return out
