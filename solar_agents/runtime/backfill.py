"""A worker's progress, and the backfill mode (``EXIT_WHEN_CAUGHT_UP``): a bar of raw messages read, then
exit 0 with a summary once every input is processed to its end and written."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import faust
from faust.sensors import Sensor
from faust.types import TP

from solar_agents.cli.progress import ProgressPrinter
from solar_agents.observe.lag import partition_offsets
from solar_agents.observe.log import get_logger
from solar_agents.observe.stats import Stats
from solar_agents.settings import Settings

log = get_logger(__name__)


class Progress:
    """What the worker has done, for its log, its backfill bar and its summary."""

    def __init__(
        self, app: faust.App, settings: Settings, stats: Stats, records_kept: Callable[[], int]
    ) -> None:
        self.app = app
        self.settings = settings
        self.stats = stats
        self.records_kept = records_kept
        self.raw = (settings.kafka_topic_solar, settings.kafka_topic_weather)
        self.started = time.monotonic()
        self._last_logged: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        counts = self.stats.counts(self.raw)
        return {
            "ingested": counts["ingested"],
            "dead_letters": counts["dead_letters_total"],
            **{
                name: counts[name]
                for name in (
                    "late",
                    "reads_held",
                    "records_read_again",
                    "offsets_absent",
                    "rows_emitted",
                    "rows_written",
                    "write_failures",
                )
            },
            # What the aligner holds in memory: bounded by retention, whatever the history's length.
            "records_kept": self.records_kept(),
        }

    async def log(self) -> None:
        """One line every few seconds while work flows, so long backfills show where they are."""
        fields = self.fields()
        snapshot = tuple(str(v) for v in fields.values())
        if snapshot == self._last_logged:
            return
        self._last_logged = snapshot
        log.info("progress", **fields, rss_mib=resident_mib())

    def read(self) -> int:
        """Raw messages this worker has read, valid or not."""
        s = self.stats
        return sum(s.ingested[t] + s.dead_letters[t] for t in self.raw)

    def unread(self) -> int | None:
        """Raw messages not yet read by this worker; None while an end is not known."""
        offsets = partition_offsets(self.app.consumer, self.raw)
        if not offsets or any(o.unread is None for o in offsets):
            return None
        return sum(o.unread or 0 for o in offsets)

    def summary(self) -> str:
        s = self.stats
        seconds = time.monotonic() - self.started
        read = sum(s.ingested.values()) + sum(s.dead_letters.values())
        lines = ["", "backfill done", f"  {'elapsed':<24}{seconds:,.1f} s"]
        for topic in self.raw:
            lines.append(f"  {'read ' + topic:<24}{s.ingested[topic] + s.dead_letters[topic]:,}")
        lines += [
            f"  {'dead letters':<24}{sum(s.dead_letters.values()):,}  ({self.settings.deadletter_topic})",
            f"  {'late records':<24}{s.late:,}",
            f"  {'rows written':<24}{s.rows_written:,}  ({self.settings.features_table})",
            f"  {'rate':<24}{read / seconds if seconds else 0:,.0f} messages/s",
            "",
        ]
        return "\n".join(lines)


class SentOffsets(Sensor):  # type: ignore[misc]
    """The highest offset this worker's producer has delivered per partition of its own topics (records,
    rows): the backfill is done only once its consumer has committed past them."""

    def __init__(self, topics: Iterable[str]) -> None:
        super().__init__()
        self.topics = frozenset(topics)
        self.highest: dict[TP, int] = {}

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        if metadata.topic in self.topics:
            tp = TP(metadata.topic, metadata.partition)
            if metadata.offset > self.highest.get(tp, -1):
                self.highest[tp] = metadata.offset


class Backfill:
    """Backfill mode: the progress bar on the real stdout (the worker redirects print() into its log), and
    the exit once caught up."""

    def __init__(
        self,
        app: faust.App,
        progress: Progress,
        flush: Callable[[], Awaitable[None]],
        flush_tables: Callable[[], Awaitable[None]],
    ) -> None:
        self.app = app
        self.progress = progress
        self.flush = flush
        self.flush_tables = flush_tables
        settings = progress.settings
        self.own = (settings.records_topic, settings.rows_topic)
        self.sources = (*progress.raw, *self.own)
        self.sent = SentOffsets(self.own)
        self.printer = ProgressPrinter(sys.__stdout__ or sys.stderr)
        self._finished_at: int | None = None
        self._done = False
        self.enabled = False

    def enable(self) -> None:
        """Backfill mode, before the worker starts: the bar, and the exit once caught up."""
        if not self.enabled:
            self.enabled = True
            self.app.sensors.add(self.sent)

    async def tick(self) -> None:
        """The bar: raw messages read of all there are (read plus what is left up to the high-water marks of
        fetch responses), rate and ETA."""
        if not self.enabled:
            return
        read = self.progress.read()
        left = self.progress.unread()
        total = None if left is None else read + left
        finished = left == 0
        if finished and self._finished_at == read:
            return  # said once: the summary follows
        self._finished_at = read if finished else None
        self.printer.update(read, total, final=finished)

    def caught_up(self, *, committed: bool) -> bool:
        """Every source partition read (``committed``: and committed) to its end. The raw topics' ends are
        fixed during a backfill. The records and rows topics are the worker's own: their high-water marks
        come from fetch responses and may not show yet what was just sent, so they must also be past the
        highest offset the producer delivered there."""
        offsets = partition_offsets(self.app.consumer, self.sources)
        if not offsets:
            return False
        sent = self.sent.highest
        for o in offsets:
            at = (o.committed if committed else o.position) or 0  # None: nothing read there yet
            if o.highwater is None or at < o.highwater:
                return False
            if at <= sent.get(TP(o.topic, o.partition), -1):
                return False
        return True

    async def exit_when_caught_up(self) -> None:
        """Once every source partition is processed to its end and written, say so and stop.

        "Processed" is committed: every agent acks only after its work has landed (the writer after its
        write), and Faust flushes the producer before it commits. The check runs often and commits at once
        what is acked, rather than waiting for the commit timer, so the exit follows the last write closely.
        """
        if not self.enabled or self._done or not self.caught_up(committed=False):
            return
        if not self.caught_up(committed=True):
            await self.flush_tables()  # the align agent's held batches: acked once their state is written
            await self.app.consumer.commit()
            if not self.caught_up(committed=True):
                return
        self._done = True
        await self.flush()
        await self.tick()  # the bar at its end: the exit may come before the bar's own timer
        out = sys.__stdout__ or sys.stderr
        out.write(self.progress.summary())
        out.flush()
        log.info("backfill_done", **self.progress.fields())
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful stop: commit, close, exit 0


def resident_mib() -> float | None:
    """This process's resident memory now, in MiB (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
