"""Phase 1, data: the synthetic history, generated and produced into the 1x topics."""

from __future__ import annotations

import time

from benchmarks import kafka_io, synth
from benchmarks.context import Group, Run
from benchmarks.options import PARTITIONS


def produce_history(
    run: Run,
    group: Group,
    copies: int,
    history: list[synth.Obs] | None = None,
    regions: list[synth.Region] | None = None,
) -> int:
    """The history (the run's, unless another is given with its regions), ``copies`` times with later
    years (each copy shifted by the run's history length), into fresh topics of ``group``; the message
    count."""
    history = run.history if history is None else history
    regions = run.regions if regions is None else regions
    kafka_io.create_topics(run.bootstrap, {group.solar: PARTITIONS, group.weather: PARTITIONS})
    producer = kafka_io.bulk_producer(run.bootstrap, partitioner="murmur2_random")
    expected = len(history) * copies
    run.progress.reset()
    started = time.perf_counter()

    def tick(n: int) -> None:
        run.progress.tick(f"produce {group.name}: {n:,}/{expected:,} messages")

    messages = (
        (run.topic(group, feed), key, value)
        for feed, key, value in synth.encode_all(
            history, regions, copies=copies, copy_hours=run.history_hours
        )
    )
    count = kafka_io.produce_all(producer, messages, progress=tick)
    seconds = time.perf_counter() - started
    run.progress(f"produced {count:,} messages to {group.solar}, {group.weather} in {seconds:.1f} s")
    return count


def data(run: Run) -> None:
    started = time.perf_counter()
    run.history, run.live = synth.generate(run.regions, run.history_hours, run.live_hours, run.o.seed)
    run.progress(
        f"generated {len(run.history):,} history messages ({run.o.regions} regions x "
        f"{run.o.days} days) in {time.perf_counter() - started:.1f} s"
    )
    run.messages_1x = produce_history(run, run.g1, 1)
