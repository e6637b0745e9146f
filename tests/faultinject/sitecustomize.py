"""A fault injected into one agent of a real worker process, for the liveness tests.

Put this directory on ``PYTHONPATH`` and set ``SOLAR_AGENTS_TEST_FAULT_TOPIC`` to a topic: every batch of that
topic's agent then raises when it is about to be acked, after all its work was done (sends, table writes,
database writes), so the agent crashes on every batch, as it would on a fault that a restart does not cure.
No other code path changes. Python imports ``sitecustomize`` at start-up from the path.
"""

from __future__ import annotations

import os

TOPIC = os.environ.get("SOLAR_AGENTS_TEST_FAULT_TOPIC")

if TOPIC:
    from typing import Any

    from solar_agents.runtime import batches

    _ack = batches.Taken.ack

    async def _faulty_ack(self: Any, stream: Any) -> None:
        if self.messages and self.messages[0].topic == TOPIC:
            raise RuntimeError(f"injected fault: the agent of {TOPIC} fails every batch")
        await _ack(self, stream)

    batches.Taken.ack = _faulty_ack  # type: ignore[method-assign]
