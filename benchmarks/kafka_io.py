"""confluent-kafka helpers: create topics, produce fast, read topics completely, the raw read rate.

The local broker (tansu) answers ListOffsets(latest) wrongly after batched writes, so nothing here trusts
``get_watermark_offsets(cached=False)``: a read is complete when every partition has reported
end-of-partition, which librdkafka takes from the high-water mark of fetch responses (that one is right).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic


def create_topics(bootstrap: str, topics: Mapping[str, int], timeout: float = 30.0) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout).topics
    new = [
        NewTopic(n, num_partitions=p, replication_factor=1) for n, p in topics.items() if n not in existing
    ]
    if new:
        for name, future in admin.create_topics(new, request_timeout=timeout).items():
            try:
                future.result(timeout)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise RuntimeError(f"creating topic {name} failed: {exc}") from exc
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(timeout=timeout).topics
        if all(n in meta and len(meta[n].partitions) == p for n, p in topics.items()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible after {timeout} s: {sorted(topics)}")
        time.sleep(0.1)


def partitions_of(bootstrap: str, topic: str, timeout: float = 10.0) -> list[int]:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        return []
    return sorted(meta.partitions)


def changelog_topics(bootstrap: str, group: str, timeout: float = 10.0) -> list[str]:
    """The changelog topics of a Faust app's tables: ``<group>-<table>-changelog``."""
    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout).topics
    return sorted(t for t in topics if t.startswith(f"{group}-") and t.endswith("-changelog"))


def bulk_producer(bootstrap: str, **config: Any) -> Producer:
    """A producer tuned for throughput: long linger, big batches, one broker acknowledgement."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.num.messages": 10000,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "acks": 1,
            **config,
        }
    )


class DeliveryErrors:
    """Counts failed deliveries; ``raise_if_any`` after a flush."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))

    def raise_if_any(self) -> None:
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} deliveries failed, first: {self.errors[0]}")


def produce_all(
    producer: Producer,
    messages: Iterable[tuple[str, bytes, bytes]],
    progress: Callable[[int], None] | None = None,
    timeout: float = 120.0,
) -> int:
    """Send (topic, key, value) messages as fast as the client takes them; returns how many."""
    errors = DeliveryErrors()
    count = 0
    for topic, key, value in messages:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=errors)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 10000 == 0:
            producer.poll(0)
            if progress is not None:
                progress(count)
    remaining = producer.flush(timeout)
    if remaining:
        raise TimeoutError(f"{remaining} messages not delivered within {timeout} s")
    errors.raise_if_any()
    return count


@dataclass
class ReadResult:
    messages: int
    bytes: int
    seconds: float  # from the first message to the last

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else float("nan")


def read_topics(
    bootstrap: str,
    topics: Iterable[str],
    on_message: Callable[[str, int, int, bytes | None, bytes | None], None] | None = None,
    timeout: float = 300.0,
    batch: int = 10000,
    config: Mapping[str, Any] | None = None,
) -> ReadResult:
    """Read every partition of ``topics`` from the beginning with a plain consumer (no group, no commits).

    Returns when each partition has hit end-of-partition at the fetch high-water mark. Without ``on_message``
    this is the broker's raw read rate as a client sees it: the messages are fetched and touched, not parsed.
    """
    assignment = [
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in topics
        for p in partitions_of(bootstrap, topic)
    ]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52_428_800,
            "max.partition.fetch.bytes": 10_485_760,
            "queued.min.messages": 200_000,
            **(config or {}),
        }
    )
    pending = {(tp.topic, tp.partition) for tp in assignment}
    count = size = 0
    first = last = 0.0
    try:
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            got = 0
            for msg in consumer.consume(batch, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic(), msg.partition()))
                        continue
                    raise KafkaException(err)
                if not count:
                    first = time.perf_counter()
                count += 1
                got += 1
                value = msg.value()
                size += len(value) if value is not None else 0
                if on_message is not None:
                    on_message(msg.topic(), msg.partition(), msg.offset(), msg.key(), value)  # type: ignore[arg-type]
            if got:
                last = time.perf_counter()
        if pending:
            raise TimeoutError(f"reading {sorted(pending)} did not reach the end within {timeout} s")
    finally:
        consumer.close()
    return ReadResult(count, size, last - first)


def first_keyed_timestamp(
    bootstrap: str, topic: str, timeout: float = 30.0, scan: int = 1000
) -> float | None:
    """The earliest CreateTime (epoch seconds) of the first message with a non-empty key in each partition
    of ``topic`` (at most ``scan`` messages read per partition); None if there is none."""
    assignment = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(bootstrap, topic)]
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    pending = {tp.partition for tp in assignment}
    read: dict[int, int] = {}
    first: list[float] = []
    try:
        consumer.assign(assignment)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.2):
                partition = msg.partition()
                if partition not in pending:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                        continue
                    raise KafkaException(err)
                read[partition] = read.get(partition, 0) + 1
                if msg.key():
                    kind, ms = msg.timestamp()
                    if kind != TIMESTAMP_NOT_AVAILABLE:
                        first.append(ms / 1000)
                    pending.discard(partition)
                elif read[partition] >= scan:
                    pending.discard(partition)
    finally:
        consumer.close()
    return min(first, default=None)


def committed_total(bootstrap: str, group: str, topics: Iterable[str], timeout: float = 10.0) -> int:
    """The sum over every partition of ``topics`` of ``group``'s committed offset (0 where none): with
    offsets from 0 on, the messages the group has committed as processed."""
    tps = [TopicPartition(topic, p) for topic in topics for p in partitions_of(bootstrap, topic)]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committed = consumer.committed(tps, timeout=timeout)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)
