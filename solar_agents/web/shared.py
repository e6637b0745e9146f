"""Answers shared by identical requests: built once, on the event loop the agents share, and handed to every
request for the same thing that arrives while it is being built or within a second after.

A burst of requests for the same page of regions, or several dashboards polling it, then costs the agents
one build rather than one each. The answer is at most ``seconds`` old; it says when it was generated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable


class SharedAnswers:
    """At most ``max_entries`` answers, each shared for ``seconds`` after its build began."""

    def __init__(self, seconds: float, max_entries: int) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[float, asyncio.Future[bytes]]] = {}
        self.built = 0  # how many answers were built (the rest were shared)

    async def get(self, key: Hashable, build: Callable[[], Awaitable[bytes]]) -> bytes:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is None or (entry[1].done() and now - entry[0] >= self.seconds):
            entry = (now, asyncio.ensure_future(build()))
            self._entries[key] = entry
            self.built += 1
            entry[1].add_done_callback(lambda done: self._forget_failed(key, done))
            self._bound(now)
        # Shielded: a client that goes away must not cancel the build the others wait for.
        return await asyncio.shield(entry[1])

    def _forget_failed(self, key: Hashable, done: asyncio.Future[bytes]) -> None:
        """A failed build is not shared beyond the requests already waiting for it."""
        entry = self._entries.get(key)
        if entry is not None and entry[1] is done and (done.cancelled() or done.exception() is not None):
            del self._entries[key]

    def _bound(self, now: float) -> None:
        if len(self._entries) <= self.max_entries:
            return
        for key, (started, future) in list(self._entries.items()):
            if future.done() and now - started >= self.seconds:
                del self._entries[key]
        while len(self._entries) > self.max_entries:  # all recent: the oldest goes
            del self._entries[next(iter(self._entries))]
