"""What a step reads of a Kafka message, and a batch of them as plain lists.

``MessageLike`` is anything with Kafka's topic, partition, offset, key and value: Faust's ``event.message`` is
one, tests build ``Message``. ``MessageBatch`` is what crosses to a helper process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class MessageLike(Protocol):
    """What a step reads of a Kafka message."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """A Kafka message as a test (or a replay of a log) builds it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class MessageBatch:
    """A batch of one topic's messages as plain lists: what crosses to a helper process (``helpers``)."""

    topic: str
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    @classmethod
    def of(cls, topic: str, messages: Iterable[MessageLike]) -> MessageBatch:
        batch = cls(topic, [], [], [], [])
        for m in messages:
            batch.partitions.append(m.partition)
            batch.offsets.append(m.offset)
            batch.keys.append(m.key)
            batch.values.append(m.value)
        return batch

    def messages(self) -> list[Message]:
        topic = self.topic
        return [
            Message(topic, p, o, k, v)
            for p, o, k, v in zip(self.partitions, self.offsets, self.keys, self.values, strict=True)
        ]
