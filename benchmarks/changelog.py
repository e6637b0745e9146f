"""Counting the records of the pipeline's changelog topics, as ``kafka_io.read_topics`` reads them."""

from __future__ import annotations

from collections import Counter


class ChangelogTally:
    """Records and the largest value (bytes) per changelog topic, as ``kafka_io.read_topics`` reads them."""

    def __init__(self) -> None:
        self.records: Counter[str] = Counter()
        self.max_value: dict[str, int] = {}

    def __call__(
        self, topic: str, _partition: int, _offset: int, _key: bytes | None, value: bytes | None
    ) -> None:
        self.records[topic] += 1
        size = len(value) if value is not None else 0
        if size > self.max_value.get(topic, -1):
            self.max_value[topic] = size

    def records_by_topic(self) -> dict[str, int]:
        return dict(sorted(self.records.items()))

    def max_value_bytes_by_topic(self) -> dict[str, int]:
        return dict(sorted(self.max_value.items()))
