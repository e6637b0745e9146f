"""Whether a worker is live and ready, as pure state: the runtime reports what happens (an agent crashed, the
worker is stopping), the web view answers ``/healthz`` and ``/readyz`` from it.

Live means working: every agent running. An agent that crashes ends the worker, with one line naming the
cause, so that its orchestrator starts a new one from the last commit: Faust's supervisor would restart the
agent in the same process, on the same stream, and a batch taken there (``noack_take``) can leave that
stream stalled for good behind its last buffer (seen: a restarted ingest agent that never read again), or,
with a full ``DATA_DIR``, crash again for ever (RocksDB refuses every write after "No space left on device"
until the store is opened anew, even once space is free). Every fault that a retry can get over is retried
in place (the database, the broker) and is not a crash; a new worker could do no better than that.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

ERROR_CHARS = 300

DATA_DIR_FULL = (
    "stopped: DATA_DIR ({data_dir}) is full ({error}); free space there or give it more, then start the "
    "worker again: input not yet written is read again"
)
AGENT_FAILED = (
    "stopped: agent {agent} failed with {error}; a new worker goes on from the last commit: input not yet "
    "written is read again"
)


def one_line(error: BaseException) -> str:
    """``Type: message`` on one line, bounded."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text[:ERROR_CHARS]


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a full filesystem: an ``OSError`` ENOSPC, or RocksDB's
    status text for it."""
    return any(
        (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)
        for e in _chain(error)
    )


@dataclass(frozen=True, slots=True)
class Failing:
    """A retry under way: since when (monotonic seconds), how many attempts failed, the last error."""

    since: float
    attempts: int
    error: str


@dataclass
class Health:
    """One worker's liveness."""

    data_dir: str
    crashes: Counter[str] = field(default_factory=Counter)
    fatal: str | None = None  # the line the worker ends with
    stopping: bool = False

    def crashed(self, agent: str, error: BaseException) -> str | None:
        """Count a crash of ``agent``. Returns the line to end the worker with, once (the first crash)."""
        self.crashes[agent] += 1
        if self.fatal is not None:
            return None
        text = one_line(error)
        if disk_full(error):
            self.fatal = DATA_DIR_FULL.format(data_dir=self.data_dir, error=text)
        else:
            self.fatal = AGENT_FAILED.format(agent=agent, error=text)
        return self.fatal

    def live(self, agents_down: list[str]) -> tuple[bool, str | None]:
        """(live, why not). Not live: ending on a crash, stopping, or an agent with no actor running."""
        if self.fatal is not None:
            return False, self.fatal
        if self.stopping:
            return False, "stopping"
        if agents_down:
            return False, f"agents not running: {', '.join(sorted(agents_down))}"
        return True, None

    def report(
        self, now: float, agents: Mapping[str, str], retrying: Mapping[str, Failing]
    ) -> dict[str, Any]:
        """The body of ``/healthz``: live or not and why, each agent's state (``running``, ``down``,
        ``starting``), its crashes, retries under way."""
        live, reason = self.live([name for name, state in agents.items() if state == "down"])
        return {
            "live": live,
            "reason": reason,
            "agents": dict(agents),
            "crashes": dict(self.crashes),
            "retrying": {
                event: {"seconds": round(now - f.since, 1), "attempts": f.attempts, "error": f.error}
                for event, f in sorted(retrying.items())
            },
        }


def pending(now: float, retrying: Mapping[str, Failing]) -> str:
    """What a stop that ran out of time was waiting for, on one line."""
    if not retrying:
        return "no retry under way"
    return "; ".join(
        f"{event} for {now - f.since:.0f} s ({f.error})" for event, f in sorted(retrying.items())
    )
