"""A producer flush that waits for the table changelog, before offsets are committed.

Faust writes a table change to its changelog through a buffer that a background task drains, and flushes
the producer before every offset commit so that a committed input has its changelog written. But the
buffer's ``flush`` gives up as soon as 0.1 s pass without a message leaving it, and does not count the
message the task is still handing over. Under load the commit then goes ahead with changelog records still
in the buffer; if the process dies before they leave, the input is never read again and the changelog never
gets them: a worker restored from the changelog alone (a lost disk, ``rebuild``, another worker taking the
partitions over) misses those hours for good.

This buffer counts what was put and what was handed to the Kafka producer, and ``flush`` waits until they
are equal. Nothing depends on the broker: it is the same on Apache Kafka.
"""

from __future__ import annotations

import asyncio
from typing import cast

from faust.transport import producer as faust_producer
from faust.types import AppT
from faust.types.tuples import FutureMessage

_ProducerBuffer = faust_producer.ProducerBuffer


class DrainingProducerBuffer(_ProducerBuffer):
    """Faust's producer buffer whose ``flush`` returns only once everything put in it was sent on."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.put_count = 0
        self.sent_count = 0

    def put(self, fut: FutureMessage) -> None:
        self.put_count += 1
        super().put(fut)

    async def _send_pending(self, fut: FutureMessage) -> None:
        try:
            await super()._send_pending(fut)
        finally:
            self.sent_count += 1

    async def flush(self) -> None:
        if cast(AppT, self.app).conf.producer_threaded:  # another thread drains it: Faust's own flush
            await super().flush()
            return
        while self.sent_count < self.put_count:
            if self.should_stop:  # the draining task has ended: send the rest from here
                await self._send_rest()
                return
            self.message_sent.clear()
            if self.sent_count >= self.put_count:
                break
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=1.0)
            except TimeoutError:
                continue  # the broker is slow: keep waiting, the commit must not overtake the changelog

    async def on_stop(self) -> None:
        await self.flush()

    async def _send_rest(self) -> None:
        while True:
            try:
                fut = self.pending.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self._send_pending(fut)


def install() -> None:
    """Make every Faust producer created from now on use the draining buffer. Idempotent."""
    faust_producer.ProducerBuffer = DrainingProducerBuffer  # type: ignore[misc]
