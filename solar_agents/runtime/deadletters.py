"""The dead-letter topic: a message the service cannot use goes there, with its bytes and a reason."""

from __future__ import annotations

from functools import partial

import faust

from solar_agents.core.messages import MessageLike
from solar_agents.core.records import dead_letter
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
from solar_agents.runtime.batches import retrying

log = get_logger(__name__)


class DeadLetters:
    """Sends rejected messages aside: bad input from the ingest, and records messages the align step could
    not apply (an internal error). Each is counted and kept among the latest for the web view."""

    def __init__(self, topic: faust.TopicT, max_bytes: int, stats: Stats) -> None:
        self.topic = topic
        self.max_bytes = max_bytes
        self.stats = stats

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
        )
        self.stats.dead_letter(message.topic, message.partition, message.offset, reason, message.value)
        log.warning(
            "dead_letter",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            size=-1 if message.value is None else len(message.value),
            reason=reason,
            dropped=letter.headers.get("dropped", b"").decode() or None,
        )
