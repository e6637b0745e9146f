"""The ingest step in-process: records messages per records partition, bounded, in order."""

from __future__ import annotations

from collections import defaultdict

from step_harness import SOLAR, WEATHER, raw_feed

from solar_agents.core.hours import Record
from solar_agents.core.messages import MessageBatch
from solar_agents.core.records import RegionResolver
from solar_agents.core.wire import decode_message_records, records_partition
from solar_agents.steps.ingest import ingest, ingest_messages

REGIONS = tuple(f"site_{n:03}" for n in range(60))


def test_a_batch_sends_a_few_messages_per_records_partition_not_one_per_region() -> None:
    """60 regions in one batch: each records message holds the regions of one partition, at most
    ``per_message`` records, and together they hold every record of every region in the order read."""
    raw = [m for m in raw_feed(hours=6, regions=REGIONS) if m.topic == SOLAR]
    resolver = RegionResolver({}, "DE")
    expected = ingest(raw, solar=True, regions=resolver).records
    per_message, partitions = 40, 4
    out = ingest_messages(resolver, MessageBatch.of(SOLAR, raw), True, per_message, partitions)
    assert len(expected) == len(REGIONS)
    assert len(out.messages) <= partitions + sum(len(r) for r in expected.values()) // per_message
    got: dict[str, list[Record]] = defaultdict(list)
    for partition, value in out.messages:
        groups = decode_message_records(b"\x00", value)
        assert sum(len(records) for _, records in groups) <= per_message
        for region, records in groups:
            assert records_partition(region, partitions) == partition
            got[region].extend(records)
    assert got == expected
    assert out.count == sum(len(r) for r in expected.values())


def test_bad_messages_are_rejected_with_their_positions_and_the_rest_sent() -> None:
    raw = [m for m in raw_feed(hours=48, regions=REGIONS[:3]) if m.topic == WEATHER]
    out = ingest_messages(RegionResolver({}, "DE"), MessageBatch.of(WEATHER, raw), False, 250, 8)
    rejected = {(p, o) for p, o, _ in out.rejected}
    assert rejected, "the scenario's feed holds bad messages"
    sent = sum(len(r) for _, v in out.messages for _, r in decode_message_records(b"\x00", v))
    assert sent + len(rejected) == len(raw) == out.count + len(rejected)
