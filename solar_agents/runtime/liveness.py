"""A worker's liveness, wired to Faust: an agent's crash ends the worker with one line naming the cause
(``observe.health`` says why restarting the agent in place is no cure), and the answers of ``/healthz`` and
``/readyz``.

Faust's supervisor restarts a crashed agent for ever (up to 100 times a second): a fault that every restart
met again (a full ``DATA_DIR``) left a worker that answered its web port and wrote nothing. Here the worker
ends instead, non-zero, so that its orchestrator starts a new one; what was not written was not committed,
and the new worker reads it again.
"""

from __future__ import annotations

import time
from typing import Any, cast

import faust

from solar_agents.observe.health import Health, one_line
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
from solar_agents.runtime.faust_compat import agent_states, on_agent_error
from solar_agents.runtime.worker import Fatal

log = get_logger(__name__)


class Liveness:
    """Counts the agents' crashes, ends the worker on a fatal one, and answers the health endpoints."""

    def __init__(self, app: faust.App, health: Health, stats: Stats) -> None:
        self.app = app
        self.health = health
        self.stats = stats

    def watch(self, agent: Any) -> None:
        """Count the crashes of ``agent`` (each is restarted by Faust's supervisor meanwhile)."""
        on_agent_error(agent, self._crashed)

    async def _crashed(self, agent: Any, exc: BaseException) -> None:
        name = _short(agent.name)
        line = self.health.crashed(name, exc)
        log.error("agent_crashed", agent=name, error=one_line(exc), crashes=self.health.crashes[name])
        if line is not None:
            log.error("worker_ending", reason=line)
            await self.app.crash(Fatal(line))

    def agents(self) -> dict[str, str]:
        return {_short(name): state for name, state in agent_states(self.app).items()}

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """Live: every agent running, none failed, not ending or stopping. The body also says how
        far the worker got (messages ingested, rows written): a probe can see progress, not only life."""
        body = self.health.report(time.monotonic(), self.agents(), self.stats.retrying)
        stats = self.stats
        body["progress"] = {"ingested": sum(stats.ingested.values()), "rows_written": stats.rows_written}
        return bool(body["live"]), body

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        """Ready: live, and the tables recovered (the worker consumes its partitions)."""
        live, reason = self.health.live([a for a, state in self.agents().items() if state == "down"])
        recovery = cast(Any, self.app.tables).recovery  # TableManager's, not in its interface
        recovered = bool(recovery.completed.is_set()) and not self.app.rebalancing
        if live and not recovered:
            reason = "recovering the tables" if recovery.in_recovery else "waiting for partitions"
        try:
            partitions = len(self.app.consumer.assignment())
        except Exception:  # not started yet
            partitions = 0
        ready = live and recovered
        return ready, {
            "ready": ready,
            "live": live,
            "recovered": recovered,
            "partitions": partitions,
            "reason": reason,
        }


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]
