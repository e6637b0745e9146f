"""End offsets taken from fetch responses, for the changelog restore; a fetch wait that can be set.

Faust restores a table by reading its changelog up to the end offsets that ListOffsets answers. Some
Kafka-protocol brokers (the local one used by the demo and the tests among them) answer ListOffsets after a
batched write with the base offset of the last record batch + 1 instead of the last offset + 1: a worker
whose local state was deleted then restores a stale table and writes wrong rows.

The high-water mark in a fetch response is right on every broker, so the end offset of each partition is
the larger of the ListOffsets answer and the high-water mark of a fetch at (that answer - 1). On Apache
Kafka both are equal and this costs one small fetch per partition at restore time.

Faust also fixes the consumer's fetch wait at 1.5 s. A broker that holds a waiting fetch until that time is
up even when records arrive meanwhile (the local one does) adds up to 1.5 s per topic hop to the latency;
``BROKER_FETCH_MAX_WAIT_SECONDS`` sets it. On Apache Kafka, which answers as soon as records arrive, a
shorter wait only means more requests while idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, cast

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from solar_agents.log import get_logger

log = get_logger(__name__)


async def fetched_end_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition], wait: float = 10.0
) -> dict[TopicPartition, int]:
    """End offsets of ``partitions``: max(ListOffsets, the high-water mark of a fetch)."""
    tps = list(partitions)
    if not tps:
        return {}
    listed = cast(Mapping[TopicPartition, int], await consumer.end_offsets(tps))
    client = consumer._client
    probe = AIOKafkaConsumer(
        bootstrap_servers=client._bootstrap_servers,
        security_protocol=client._security_protocol,
        ssl_context=client._ssl_context,
        sasl_mechanism=client._sasl_mechanism,
        sasl_plain_username=client._sasl_plain_username,
        sasl_plain_password=client._sasl_plain_password,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=1024,  # one record is enough: only the high-water mark is wanted
        fetch_max_wait_ms=100,
    )
    await probe.start()
    try:
        probe.assign(tps)
        for tp in tps:
            probe.seek(tp, max(listed[tp] - 1, 0))
        ends: dict[TopicPartition, int] = {}
        deadline = asyncio.get_running_loop().time() + wait
        while len(ends) < len(tps) and asyncio.get_running_loop().time() < deadline:
            await probe.getmany(timeout_ms=100, max_records=len(tps))
            for tp in tps:
                highwater = probe.highwater(tp)
                if highwater is not None and tp not in ends:
                    ends[tp] = max(listed[tp], highwater)
    finally:
        await probe.stop()
    for tp in tps:
        if tp not in ends:
            ends[tp] = listed[tp]  # no fetch answer in time: ListOffsets is all there is
        elif ends[tp] != listed[tp]:
            log.warning(
                "end_offset_corrected",
                topic=tp.topic,
                partition=tp.partition,
                listed=listed[tp],
                fetched=ends[tp],
            )
    return ends


async def _highwaters(self: AIOKafkaConsumerThread, partitions: list[Any]) -> Mapping[Any, int]:
    consumer = self._ensure_consumer()
    if self.consumer.in_transaction:
        return {tp: consumer.last_stable_offset(tp) for tp in partitions}
    return await fetched_end_offsets(consumer, partitions)


_create_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def install(fetch_max_wait_seconds: float = 1.5) -> None:
    """Make Faust's consumer use fetched end offsets (restore, lag) and the given fetch wait. Idempotent."""
    AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> AIOKafkaConsumer:
        consumer = _create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = round(fetch_max_wait_seconds * 1000)  # read when the consumer starts
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
