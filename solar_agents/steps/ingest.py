"""The ingest step: a batch of one raw feed's messages -> records messages per records partition, and dead
letters.

Pure: no Faust, no broker. ``runtime.ingest`` sends what this returns and acks the batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from solar_agents.core.hours import Record
from solar_agents.core.messages import MessageBatch, MessageLike
from solar_agents.core.records import InvalidMessage, RegionResolver, parse_solar, parse_weather
from solar_agents.core.wire import encode_region_records, records_partition
from solar_agents.observe.log import get_logger

log = get_logger(__name__)

# Records messages stay well below the consumer's fetch size (CONSUMER_MAX_FETCH_BYTES, at least 64 KiB):
# about 150 bytes a record, and a region's name with each region.
RECORDS_PER_MESSAGE = 250


@dataclass(slots=True)
class Ingested:
    """What one batch of a raw topic yields."""

    records: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))  # per region
    rejected: list[tuple[MessageLike, str]] = field(default_factory=list)  # (message, reason): dead letters
    last_offset: dict[int, int] = field(default_factory=dict)  # per raw partition, valid or not
    latest_hour: dict[int, int] = field(default_factory=dict)  # per raw partition, of valid records
    lowest_hour: dict[int, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(len(records) for records in self.records.values())


def ingest(messages: Iterable[MessageLike], *, solar: bool, regions: RegionResolver) -> Ingested:
    """Validate raw messages of one feed: records grouped by region, the rest rejected with a reason."""
    out = Ingested()
    for message in messages:
        partition = message.partition
        out.last_offset[partition] = message.offset
        try:
            if message.value is None:
                raise InvalidMessage("empty message (no value)")
            record: Record
            if solar:
                record, region = parse_solar(message.value, partition, message.offset)
            else:
                record, region = parse_weather(message.value, message.key, partition, message.offset, regions)
        except InvalidMessage as exc:
            out.rejected.append((message, str(exc)))
            continue
        except Exception as exc:  # a bug must not stop the worker or lose the message
            log.exception("ingest_failed", topic=message.topic, offset=message.offset)
            out.rejected.append((message, f"internal error: {type(exc).__name__}: {exc}"))
            continue
        out.records[region].append(record)
        hour = record.hour
        if hour > out.latest_hour.get(partition, hour - 1):
            out.latest_hour[partition] = hour
        if hour < out.lowest_hour.get(partition, hour + 1):
            out.lowest_hour[partition] = hour
    return out


@dataclass(slots=True)
class IngestedMessages:
    """An ingested batch ready to send: the records messages, and the rest of ``Ingested`` but the records."""

    messages: list[tuple[int, bytes]]  # (records partition, records message), in the order to send
    rejected: list[tuple[int, int, str]]  # (partition, offset, reason): dead letters
    last_offset: dict[int, int]
    latest_hour: dict[int, int]
    lowest_hour: dict[int, int]
    count: int


def ingest_messages(
    regions: RegionResolver, raw: MessageBatch, solar: bool, per_message: int, partitions: int
) -> IngestedMessages:
    """``ingest``, then the records encoded per records partition (of ``partitions``): all the regions of a
    partition in one message, at most ``per_message`` records a message. With thousands of regions a batch
    then sends a few messages, not one per region."""
    batch = ingest(raw.messages(), solar=solar, regions=regions)
    by_partition: dict[int, list[tuple[str, list[Record]]]] = defaultdict(list)
    for region, records in batch.records.items():
        by_partition[records_partition(region, partitions)].append((region, records))
    messages: list[tuple[int, bytes]] = []
    for partition, groups in by_partition.items():
        chunk: list[tuple[str, list[Record]]] = []
        size = 0
        for region, records in groups:
            for start in range(0, len(records), per_message):  # a region's records may span messages
                part = records[start : start + per_message]
                if chunk and size + len(part) > per_message:
                    messages.append((partition, encode_region_records(chunk)))
                    chunk, size = [], 0
                chunk.append((region, part))
                size += len(part)
        messages.append((partition, encode_region_records(chunk)))
    return IngestedMessages(
        messages,
        [(m.partition, m.offset, reason) for m, reason in batch.rejected],
        batch.last_offset,
        batch.latest_hour,
        batch.lowest_hour,
        batch.count,
    )
