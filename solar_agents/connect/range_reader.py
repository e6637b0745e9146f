"""Reads given offset ranges of a topic with a consumer of its own, outside the group: the records a hand-over
dropped (``runtime.faust_compat``, item 6), and dead letters' original bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.types import TP


class RangeReader:
    """Reads given offset ranges with a consumer of its own (started at the first read), one at a time."""

    def __init__(self, make_probe: Callable[[], AIOKafkaConsumer]) -> None:
        self._make_probe = make_probe
        self._probe: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(self, tp: TP, start: int, end: int, wait: float = 10.0) -> list[ConsumerRecord[Any, Any]]:
        """The records at offsets ``start`` to ``end`` (exclusive) of ``tp``; none where the range holds
        none (transaction markers, a compacted or expired range). TimeoutError if the broker does not answer
        up to ``end`` within ``wait`` seconds."""
        async with self._lock:
            probe = self._probe
            if probe is None:
                probe = self._probe = self._make_probe()
                await probe.start()
            partition = TopicPartition(tp.topic, tp.partition)
            probe.assign([partition])
            probe.seek(partition, start)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            found: list[ConsumerRecord[Any, Any]] = []
            while await probe.position(partition) < end:
                if loop.time() > deadline:
                    raise TimeoutError(f"{tp.topic}:{tp.partition} not read from {start} to {end} in {wait}s")
                fetched = await probe.getmany(partition, timeout_ms=200)
                found.extend(r for r in fetched.get(partition, ()) if start <= r.offset < end)
            return found

    async def close(self) -> None:
        async with self._lock:
            if self._probe is not None:
                probe, self._probe = self._probe, None
                await probe.stop()
