"""Test helpers around confluent-kafka: create topics, produce, read a topic back completely.

The local broker (tansu) answers ListOffsets(latest) wrongly after batched writes (base offset of
the last batch + 1), so nothing here trusts `get_watermark_offsets(cached=False)`. Reading is
complete when every partition has reported end-of-partition, which librdkafka derives from the
high-water mark in fetch responses (correct on tansu and on Kafka), and no message has arrived
for a short idle period.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

Headers = Mapping[str, bytes]
# A broker's address, or a whole librdkafka client configuration (``KafkaConnection.librdkafka()``): how
# to reach a broker that requires TLS or a login.
Bootstrap = str | Mapping[str, str]


def client_config(bootstrap: Bootstrap) -> dict[str, str]:
    return {"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else dict(bootstrap)


# (key, value) or (key, value, headers)
Message = tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Headers]


@dataclass(frozen=True)
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes] = field(default_factory=dict)
    timestamp_ms: int | None = None


def create_topics(bootstrap: Bootstrap, topics: Mapping[str, int], timeout: float = 20.0) -> None:
    """Create topics with the given partition counts; an existing topic with that count is fine."""
    admin = AdminClient(client_config(bootstrap))
    existing = admin.list_topics(timeout=timeout).topics
    for name, partitions in topics.items():
        if name in existing and (have := len(existing[name].partitions)) != partitions:
            raise RuntimeError(f"topic {name} exists with {have} partitions, asked for {partitions}")
    new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()]
    new = [t for t in new if t.topic not in existing]
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
        missing = {
            name: n
            for name, n in topics.items()
            if name not in meta or meta[name].error is not None or len(meta[name].partitions) != n
        }
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not visible in metadata after {timeout} s: {missing}")
        time.sleep(0.1)


def produce(
    bootstrap: Bootstrap,
    topic: str,
    messages: Iterable[Message],
    partition: int | None = None,
    timeout: float = 30.0,
    config: Mapping[str, Any] | None = None,
) -> list[tuple[int, int]]:
    """Produce `messages` in order; return the (partition, offset) of each, in the same order.

    Messages are sent in as few record batches as librdkafka makes (a short linger), which is the
    case that trips the broker's end-offset bug.
    """
    producer = Producer({**client_config(bootstrap), "linger.ms": 50, "acks": "all", **(config or {})})
    results: list[tuple[int, int] | None] = []
    errors: list[str] = []

    def on_delivery(index: int, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            errors.append(f"message {index}: {err}")
        else:
            results[index] = (msg.partition(), msg.offset())

    for index, item in enumerate(messages):
        key, value = item[0], item[1]
        headers = list(item[2].items()) if len(item) == 3 else None
        results.append(None)
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": partial(on_delivery, index)}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, **kwargs)
                break
            except BufferError:
                # Local queue full: let deliveries drain, then retry this message.
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining:
        raise TimeoutError(f"{remaining} messages to {topic} not delivered within {timeout} s")
    if errors:
        raise RuntimeError(f"delivery to {topic} failed: {errors[:5]}")
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"no delivery report for messages {missing[:10]}")
    return [r for r in results if r is not None]


def consume_all(
    bootstrap: Bootstrap,
    topic: str,
    timeout: float = 20.0,
    idle: float = 0.5,
    min_messages: int = 0,
) -> list[Msg]:
    """Read every partition of `topic` from the beginning, without a group or commits.

    Returns once each partition has reached its end (fetch high-water mark) and nothing new
    arrived for `idle` seconds, and at least `min_messages` were read; at `timeout`, returns what
    was read so far. Messages are sorted by (partition, offset).
    """
    admin = AdminClient(client_config(bootstrap))
    meta = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise RuntimeError(f"topic {topic} not found: {meta.error if meta else 'no metadata'}")
    partitions = sorted(meta.partitions)
    consumer = Consumer(
        {
            **client_config(bootstrap),
            # Required by the client even though assign() uses no group coordination.
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    messages: list[Msg] = []
    next_offset = dict.fromkeys(partitions, 0)
    at_end: set[int] = set()
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + timeout
        last_activity = time.monotonic()
        while time.monotonic() < deadline:
            msg = consumer.poll(0.05)
            now = time.monotonic()
            if msg is None:
                if (
                    len(at_end) == len(partitions)
                    and now - last_activity >= idle
                    and len(messages) >= min_messages
                    and _caught_up(consumer, topic, next_offset)
                ):
                    break
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition() or 0)
                    continue
                raise KafkaException(err)
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None
            last_activity = now
            at_end.discard(partition)
            next_offset[partition] = offset + 1
            _ts_type, ts = msg.timestamp()
            messages.append(
                Msg(
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    key=msg.key(),
                    value=msg.value(),
                    headers=_headers(msg.headers()),
                    timestamp_ms=ts if ts >= 0 else None,
                )
            )
    finally:
        consumer.close()
    messages.sort(key=lambda m: (m.partition, m.offset))
    return messages


def _headers(raw: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> dict[str, bytes]:
    """Headers as a dict of bytes (a header without a value becomes b"")."""
    items = raw.items() if isinstance(raw, Mapping) else (raw or [])
    out: dict[str, bytes] = {}
    for name, value in items:
        out[name] = value.encode() if isinstance(value, str) else bytes(value or b"")
    return out


def _caught_up(consumer: Consumer, topic: str, next_offset: Mapping[int, int]) -> bool:
    """True when the last fetch responses' high-water marks are all reached."""
    for partition, offset in next_offset.items():
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        if high > offset:
            return False
    return True


@dataclass
class Kafka:
    """The helpers above bound to one broker, plus unique topic names for isolated tests."""

    bootstrap: str
    created: list[str] = field(default_factory=list)
    security: Mapping[str, str] | None = None  # a librdkafka configuration with TLS or SASL settings

    @property
    def client(self) -> Bootstrap:
        return self.security or self.bootstrap

    def new_topic(self, partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.create_topics({name: partitions})
        self.created.append(name)
        return name

    def create_topics(self, topics: Mapping[str, int], timeout: float = 20.0) -> None:
        create_topics(self.client, topics, timeout=timeout)

    def produce(
        self,
        topic: str,
        messages: Iterable[Message],
        partition: int | None = None,
        timeout: float = 30.0,
        config: Mapping[str, Any] | None = None,
    ) -> list[tuple[int, int]]:
        return produce(self.client, topic, messages, partition=partition, timeout=timeout, config=config)

    def consume_all(
        self, topic: str, timeout: float = 20.0, idle: float = 0.5, min_messages: int = 0
    ) -> list[Msg]:
        return consume_all(self.client, topic, timeout=timeout, idle=idle, min_messages=min_messages)

    def partitions(self, topic: str) -> Sequence[int]:
        meta = AdminClient(client_config(self.client)).list_topics(topic, timeout=10)
        return sorted(meta.topics[topic].partitions)
