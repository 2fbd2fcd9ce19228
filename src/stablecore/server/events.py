"""The event hub: fans committed events out to live subscribers; the store serves the backlog.

A subscriber that falls behind is not dropped: its queue is cleared and it reads the gap
back from the store, so a slow client loses nothing and cannot make the server hold memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from stablecore.store import Event, Store

QUEUE_SIZE = 1000
PAGE = 1000
FINAL_TYPES = {"job.succeeded", "job.failed", "job.cancelled"}


@dataclass(eq=False)
class Subscriber:
    job_id: str | None = None
    session_id: str | None = None
    workflow_id: str | None = None
    owner: str | None = None  # only this owner's events; None: every event (admins)
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    behind: bool = False

    def wants(self, event: Event) -> bool:
        return ((self.job_id is None or event.job_id == self.job_id)
                and (self.session_id is None or event.session_id == self.session_id)
                and (self.workflow_id is None or event.workflow_id == self.workflow_id)
                and (self.owner is None or event.owner == self.owner))


class EventHub:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def publish(self, event: Event) -> None:
        for sub in self.subscribers:
            if sub.behind or not sub.wants(event):
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.behind = True
                while not sub.queue.empty():
                    sub.queue.get_nowait()
                sub.queue.put_nowait(None)  # wakes the reader to catch up from the store

    async def follow(self, store: Store, since: int | None, job_id: str | None = None,
                     session_id: str | None = None, workflow_id: str | None = None,
                     owner: str | None = None) -> AsyncIterator[Event]:
        """Every event after `since` (None: from now on), then live ones, in seq order;
        with `owner`, only that owner's."""
        sub = Subscriber(job_id, session_id, workflow_id, owner)
        self.subscribers.add(sub)
        last = store.last_seq() if since is None else since
        try:
            while True:
                # 1. catch up from the store, page by page
                while True:
                    sub.behind = False
                    backlog = store.events_since(last, job_id, session_id, PAGE, workflow_id,
                                                 owner)
                    for event in backlog:
                        last = event.seq
                        yield event
                    if len(backlog) < PAGE:
                        break
                # 2. live, until the subscriber falls behind
                while (event := await sub.queue.get()) is not None:
                    if event.seq > last:
                        last = event.seq
                        yield event
        finally:
            self.subscribers.discard(sub)
