"""The dead-letter topic: a message the service cannot use goes there, with its bytes and a reason.

Every dead letter is sent and counted; the log says the first of each kind of reason in full, then one
summary line per ``DEADLETTER_LOG_INTERVAL_SECONDS`` with the count of each kind (``observe.throttle``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from functools import partial

import faust
from faust.types import TP

from solar_agents.connect.range_reader import RangeReader
from solar_agents.core.messages import Message, MessageLike
from solar_agents.core.offsets import runs
from solar_agents.core.records import dead_letter
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
from solar_agents.observe.throttle import Throttle, reason_kind
from solar_agents.runtime.batches import read_again, retrying

log = get_logger(__name__)

# Offsets of refused records further apart than this are read again in separate ranges.
REREAD_GAP = 500


class DeadLetters:
    """Sends rejected messages aside: bad input from the ingest, raw records of regions past the limit, and
    records messages the align step could not apply (an internal error). Each is counted and kept among the
    latest for the web view."""

    def __init__(self, topic: faust.TopicT, max_bytes: int, stats: Stats, reader: RangeReader) -> None:
        self.topic = topic
        self.max_bytes = max_bytes
        self.stats = stats
        self.reader = reader
        self.throttle = Throttle()

    async def send(self, message: MessageLike, reason: str) -> None:
        """Retried until it is sent: its offset is acked only after, and a letter too large for the broker
        goes out without the bytes that do not fit (``core.records.dead_letter``)."""
        letter = dead_letter(
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            reason,
            self.max_bytes,
        )
        await retrying(
            "dead_letter_send_failed",
            partial(self.topic.send, key=letter.key, value=letter.value, headers=letter.headers),
            self.stats.retrying,
        )
        self.stats.dead_letter(message.topic, message.partition, message.offset, reason, message.value)
        if self.throttle.first(reason_kind(reason), time.monotonic()):
            log.warning(
                "dead_letter",
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                size=-1 if message.value is None else len(message.value),
                reason=reason,
                dropped=letter.headers.get("dropped", b"").decode() or None,
                note="the first of its kind; the next are counted in dead_letters_summary",
            )

    async def send_originals(self, refused: Iterable[tuple[str, int, int, str]]) -> None:
        """Raw records refused after their parse (topic, partition, offset, reason): their original messages,
        read again from the raw topic, as dead letters. One that is gone from the topic (its retention) goes
        out without its bytes."""
        wanted: dict[tuple[str, int], dict[int, str]] = defaultdict(dict)
        for topic, partition, offset, reason in refused:
            wanted[topic, partition][offset] = reason
        for (topic, partition), reasons in wanted.items():
            found: dict[int, MessageLike] = {}
            for start, end in runs(reasons, REREAD_GAP):
                tp = TP(topic, partition)
                for record in await read_again(self.reader, tp, start, end, self.stats.retrying):
                    found[record.offset] = record
            for offset, reason in sorted(reasons.items()):
                original = found.get(offset)
                if original is None:
                    original = Message(topic, partition, offset, None, None)
                    reason += " (the original is no longer in the topic)"
                await self.send(original, reason)
                self.stats.regions_refused += 1

    async def log_summary(self) -> None:
        """One line with the count of each kind of dead letter since the last, unless each was logged."""
        fields = self.throttle.summary(time.monotonic())
        if fields is not None:
            log.warning("dead_letters_summary", **fields)
