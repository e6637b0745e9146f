"""Whether a worker is live and ready, as pure state: the runtime reports what happens (an agent crashed, a
retry is under way, the worker is stopping), the web view answers ``/healthz`` and ``/readyz`` from it.

Live means working: every agent running and none crashing again and again. A fault that restarting an agent
cannot cure ends the worker with one line naming it (``fatal``), so that its orchestrator starts a new one:
a full ``DATA_DIR`` at once (RocksDB refuses every write after "No space left on device", even once space
is free again, until the store is opened anew), any other fault once one agent crashed ``crash_limit``
times within ``window`` seconds. A retry under way (the database or the broker not answering) is reported,
not fatal: a new worker could do no better.
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Crashes of one agent within CRASH_WINDOW_SECONDS that end the worker; from LOOPING on it is not live.
CRASH_LIMIT = 3
LOOPING = 2
CRASH_WINDOW_SECONDS = 60.0
ERROR_CHARS = 300

DATA_DIR_FULL = (
    "stopped: DATA_DIR ({data_dir}) is full ({error}); free space there or give it more, then start the "
    "worker again: input not yet written is read again"
)
CRASH_LOOP = (
    "stopped: agent {agent} crashed {count} times within {window:.0f} s, last with {error}; start the "
    "worker again once that is fixed: input not yet written is read again"
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
    """One worker's liveness. Times are monotonic seconds, given by the caller."""

    data_dir: str
    crash_limit: int = CRASH_LIMIT
    window: float = CRASH_WINDOW_SECONDS
    crashes: dict[str, deque[float]] = field(default_factory=dict)
    last_error: dict[str, str] = field(default_factory=dict)
    fatal: str | None = None  # the line the worker ends with
    stopping: bool = False

    def crashed(self, agent: str, error: BaseException, now: float) -> str | None:
        """Count a crash of ``agent``. Returns the line to end the worker with when this crash made the
        worker's state fatal (once), else None."""
        times = self.crashes.setdefault(agent, deque())
        times.append(now)
        self._forget(times, now)
        text = self.last_error[agent] = one_line(error)
        if self.fatal is not None:
            return None
        if disk_full(error):
            self.fatal = DATA_DIR_FULL.format(data_dir=self.data_dir, error=text)
        elif len(times) >= self.crash_limit:
            self.fatal = CRASH_LOOP.format(agent=agent, count=len(times), window=self.window, error=text)
        return self.fatal

    def _forget(self, times: deque[float], now: float) -> None:
        while times and times[0] < now - self.window:
            times.popleft()

    def recent_crashes(self, now: float) -> dict[str, int]:
        """Crashes per agent within the window (agents without any left out)."""
        out = {}
        for agent, times in self.crashes.items():
            self._forget(times, now)
            if times:
                out[agent] = len(times)
        return out

    def live(self, now: float, agents_down: list[str]) -> tuple[bool, str | None]:
        """(live, why not). Not live: ending on a fatal fault, stopping, an agent crash-looping (``LOOPING``
        crashes within the window) or not running."""
        if self.fatal is not None:
            return False, self.fatal
        if self.stopping:
            return False, "stopping"
        looping = {a: n for a, n in self.recent_crashes(now).items() if n >= LOOPING}
        if looping:
            agent, count = max(looping.items(), key=lambda item: item[1])
            return False, (
                f"agent {agent} crashed {count} times within {self.window:.0f} s, last with "
                f"{self.last_error[agent]}"
            )
        if agents_down:
            return False, f"agents not running: {', '.join(sorted(agents_down))}"
        return True, None

    def report(
        self, now: float, agents: Mapping[str, str], retrying: Mapping[str, Failing]
    ) -> dict[str, Any]:
        """The body of ``/healthz``: live or not and why, each agent's state (``running``, ``down``,
        ``starting``), recent crashes, retries under way."""
        down = [name for name, state in agents.items() if state == "down"]
        live, reason = self.live(now, down)
        return {
            "live": live,
            "reason": reason,
            "agents": dict(agents),
            "crashes": self.recent_crashes(now),
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
