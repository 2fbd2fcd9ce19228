"""Which idle worker runs which queued jobs: priority, then fair share among owners, then
age; model affinity; batching.

A pure function of the queue head and the idle workers, so tests drive it step by step.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator, Sequence
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
    With several owners in the queue, it is taken in `fair_share` order.
    """
    free = list(idle)
    taken: set[str] = set()
    wanted = {j.model_key for j in queue if j.model_key}
    out: list[tuple[WorkerView, list[QueuedJob]]] = []
    for job in fair_share(queue):
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


def fair_share(queue: Sequence[QueuedJob]) -> Iterator[QueuedJob]:
    """The queue, each priority level shared out among its owners in turns, so that one
    owner's thousand jobs do not run before another's first. Lazy: `plan` takes only as many
    as there are idle workers.

    The next turn goes to the owner with the fewest jobs running (counting those given turns
    here), then to the one whose latest job started longest ago; each owner's own jobs keep
    their order. With one owner the queue is returned as it is.
    """
    if len({j.owner for j in queue}) <= 1:
        yield from queue
        return
    ranked = sorted(queue, key=lambda j: (-j.priority, j.seq))
    for _, level in itertools.groupby(ranked, key=lambda j: j.priority):
        lines: dict[str | None, deque[QueuedJob]] = {}
        for job in level:
            lines.setdefault(job.owner, deque()).append(job)
        turn = itertools.count()  # owners served here come after all not yet served
        # (running, served here?, when last served, tie-break, owner)
        heap = [(line[0].owner_running, 0, line[0].owner_started, next(turn), owner)
                for owner, line in lines.items()]
        heapq.heapify(heap)
        while heap:
            running, _, _, _, owner = heapq.heappop(heap)
            line = lines[owner]
            yield line.popleft()
            if line:
                served = next(turn)
                heapq.heappush(heap, (running + 1, 1, served, served, owner))
