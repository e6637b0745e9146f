"""The ``replay`` command: move the group back on the raw topics so that the next worker start rewrites every
row from a time on (of one region, or all)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from solar_agents.cli.checks import check_broker, check_region
from solar_agents.cli.definitions import accept_definitions, check_accepted
from solar_agents.cli.errors import CommandError
from solar_agents.cli.progress import ProgressPrinter
from solar_agents.cli.rebuild import running_here
from solar_agents.core.read_progress import Feed
from solar_agents.settings import Settings


async def run_replay(
    settings: Settings, tabledir: Path, from_: str | None, region: str | None, accept: bool = False
) -> int:
    """See the ``replay`` command. Returns the exit code. ``accept``: store the declared feature definitions
    as holding from ``from_`` once the replay is set (``cli.definitions``)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    from solar_agents.core.hours import HOUR_US, InvalidTimestamp, to_micros
    from solar_agents.core.read_progress import RawPartition, Replay, ReplayMarker
    from solar_agents.core.records import RegionResolver
    from solar_agents.runtime.faust_compat import fetched_end_offsets

    try:
        if region is not None:
            check_region(region, "--region")
        if accept and region is not None:
            raise CommandError("--accept-definitions rewrites a column for every region: leave out --region")
        check_broker(settings)
        unaccepted = check_accepted(settings, accept)
        if unaccepted is not None:
            raise unaccepted
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    held = running_here(tabledir)
    if held:
        print(f"refused: a worker of the group is running here ({held[0]}); stop it first", file=sys.stderr)
        return 2
    from_hour: int | None = None
    target: int | None = None
    if from_ is not None:
        try:
            from_hour = -(-to_micros(from_) // HOUR_US)  # rows whose hour starts at or after --from
        except InvalidTimestamp as exc:
            print(f"refused: --from {exc}", file=sys.stderr)
            return 2
        # The rows from --from on need the window and the 24 h lag before them.
        target = settings.retention.history_from(from_hour)
    feeds = {Feed.SOLAR: settings.kafka_topic_solar, Feed.WEATHER: settings.kafka_topic_weather}
    regions = RegionResolver(settings.region_locations, settings.default_region)
    connection = settings.kafka.aiokafka()
    scanner = AIOKafkaConsumer(**connection, enable_auto_commit=False, group_id=None)
    group = AIOKafkaConsumer(**connection, enable_auto_commit=False, group_id=settings.kafka_consumer_group)
    await scanner.start()
    await group.start()
    try:
        tps = [
            TopicPartition(topic, p)
            for topic in feeds.values()
            for p in sorted(scanner.partitions_for_topic(topic) or ())
        ]
        ends = await fetched_end_offsets(scanner, tps, settings.kafka)
        starts: dict[RawPartition, int] = {}
        until: dict[RawPartition, int] = {}
        committed_at = {tp: await group.committed(tp) for tp in tps}
        # The scan reads each partition the group has read from its start, at most to its real end.
        scan = ScanProgress(
            sum(ends[tp] for tp in tps if committed_at[tp] is not None) if target is not None else 0
        )
        for feed, topic in feeds.items():
            for tp in (tp for tp in tps if tp.topic == topic):
                committed = committed_at[tp]
                if committed is None:
                    continue  # never read by the group: the next start reads it from the beginning anyway
                start = (
                    0
                    if target is None
                    else await _first_offset(scanner, tp, ends[tp], feed, target, region, regions, scan)
                )
                if start is not None and start < committed:
                    raw = RawPartition(feed, tp.partition)
                    starts[raw] = start
                    until[raw] = committed
                    again = committed - start
                    scan.printer.close()
                    print(f"{topic}[{tp.partition}]: offset {committed} -> {start} ({again:,} to read again)")
        if target is not None:
            scan.done()
        if not starts:
            print("nothing to replay: the group has not read past that time on any raw partition")
            return _accept(settings, from_hour, accept)
        moved = {TopicPartition(feeds[raw.feed], raw.partition): o for raw, o in starts.items()}
        refusal = await commit_offsets(settings, moved, set(tps))
        if refusal:
            print(f"refused: {refusal}", file=sys.stderr)
            return 2
    finally:
        await scanner.stop()
        await group.stop()
    marker = ReplayMarker(Replay(from_hour, region, until), starts).encode()
    producer = AIOKafkaProducer(**connection)
    await producer.start()
    try:
        partitions = await producer.partitions_for(settings.records_topic)
        for partition in sorted(partitions):
            await producer.send_and_wait(settings.records_topic, marker, key=b"", partition=partition)
    finally:
        await producer.stop()
    when = "the whole history" if from_ is None else f"every row from {from_}"
    print(f"replay set: the next worker start rewrites {when}" + (f" of region {region}" if region else ""))
    return _accept(settings, from_hour, accept)


def _accept(settings: Settings, from_hour: int | None, accept: bool) -> int:
    if not accept:
        return 0
    try:
        accepted = accept_definitions(settings, from_hour)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in accepted or ["definitions: nothing changed"]:
        print(f"definition accepted: {line}" if accepted else line)
    return 0


class ScanProgress:
    """Messages the replay has scanned, of the most it may scan; printed as a bar or a line."""

    def __init__(self, total: int) -> None:
        self.read = 0
        self.total = total
        self.printer = ProgressPrinter(sys.stdout, what="messages scanned")

    def advance(self, read: int) -> None:
        self.read += read
        self.printer.update(self.read, self.total)

    def skip(self, left: int) -> None:
        """A partition's scan stopped ``left`` messages before its end: they will not be read."""
        self.total -= left
        self.printer.update(self.read, self.total)

    def done(self) -> None:
        self.printer.update(self.read, self.total, final=True)


async def _first_offset(
    consumer: Any,
    tp: Any,
    end: int,
    feed: Feed,
    target: int,
    region: str | None,
    regions: Any,
    scan: ScanProgress,
) -> int | None:
    """The first offset of ``tp`` holding a valid record (of ``region``) at or after hour ``target``.

    Read from the payloads: offsets by time answer producer or broker time, not event time.
    """
    from solar_agents.core.hours import Solar, Weather
    from solar_agents.core.records import InvalidMessage, parse_solar, parse_weather

    consumer.assign([tp])
    consumer.seek(tp, 0)
    position = 0
    try:
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
            messages = batch.get(tp, [])
            for n, message in enumerate(messages, 1):
                position = message.offset + 1
                if message.value is None:
                    continue
                try:
                    record: Solar | Weather
                    if feed is Feed.SOLAR:
                        record, name = parse_solar(message.value, message.partition, message.offset)
                    else:
                        record, name = parse_weather(
                            message.value, message.key, message.partition, message.offset, regions
                        )
                except InvalidMessage:
                    continue
                if record.hour >= target and (region is None or name == region):
                    scan.advance(n)
                    return int(message.offset)
            scan.advance(len(messages))
            if not batch:
                break
        return None
    finally:
        scan.skip(max(0, end - position))  # what this scan did not have to read


async def commit_offsets(settings: Settings, offsets: dict[Any, int], raw: set[Any]) -> str | None:
    """Commit ``offsets`` for the group, which must have no live member; returns why not, or None.

    First as a non-member, which a broker accepts only for an empty group. A worker stopped without
    leaving (killed, or the first of a group on some brokers) stays a member until a rebalance: then join
    the group under the workers' protocol name, and commit only if the group hands over every raw partition,
    that is, if no live worker answered the rebalance.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.errors import KafkaError

    class AsFaust(RoundRobinPartitionAssignor):  # type: ignore[misc]
        name = "faust"  # the protocol the workers announce; a group refuses members of another

    connection = settings.kafka.aiokafka()
    group_id = settings.kafka_consumer_group
    outsider = AIOKafkaConsumer(**connection, enable_auto_commit=False, group_id=group_id)
    await outsider.start()
    try:
        outsider.assign(list(offsets))
        await outsider.commit(offsets)
        return None
    except KafkaError:
        pass  # the group has members, live or stale
    finally:
        await outsider.stop()
    member = AIOKafkaConsumer(
        *sorted({tp.topic for tp in raw}),
        **connection,
        enable_auto_commit=False,
        group_id=group_id,
        session_timeout_ms=int(settings.broker_session_timeout_seconds * 1000),
        heartbeat_interval_ms=int(settings.broker_heartbeat_interval_seconds * 1000),
        partition_assignment_strategy=(AsFaust,),
    )
    try:
        await member.start()
        deadline = time.monotonic() + 3 * settings.broker_session_timeout_seconds + 10
        while not member.assignment() and time.monotonic() < deadline:
            await member.getmany(timeout_ms=200, max_records=1)
        if member.assignment() != raw:
            return "a worker of the group is running (it holds raw partitions); stop every worker first"
        await member.commit(offsets)
        return None
    except KafkaError as exc:
        return f"the group would not take the offsets ({type(exc).__name__}); is a worker running?"
    finally:
        await member.stop()  # leaves the group, so the next worker joins at once
