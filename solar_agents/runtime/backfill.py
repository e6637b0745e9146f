"""A worker's progress, and the backfill mode (``EXIT_WHEN_CAUGHT_UP``): a bar of raw messages read, then
exit 0 with a summary once every input is processed to its end and written."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import faust

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


class Backfill:
    """Backfill mode: the progress bar on the real stdout (the worker redirects print() into its log), and
    the exit once caught up."""

    def __init__(self, app: faust.App, progress: Progress, flush: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self.progress = progress
        self.flush = flush
        self.sources = (
            *progress.raw,
            progress.settings.records_topic,
            progress.settings.rows_topic,
        )
        self.printer = ProgressPrinter(sys.__stdout__ or sys.stderr)
        self._finished_at: int | None = None
        self._caught_up_checks = 0

    async def tick(self) -> None:
        """The bar: raw messages read of all there are (read plus what is left up to the high-water marks of
        fetch responses), rate and ETA."""
        read = self.progress.read()
        left = self.progress.unread()
        total = None if left is None else read + left
        finished = left == 0
        if finished and self._finished_at == read:
            return  # said once: the summary follows
        self._finished_at = read if finished else None
        self.printer.update(read, total, final=finished)

    async def exit_when_caught_up(self) -> None:
        """Once every source partition is processed to its end and written, say so and stop."""
        left = [o.uncommitted for o in partition_offsets(self.app.consumer, self.sources)]
        # "Processed" is committed: the writer commits only after the write.
        if not left or any(v != 0 for v in left):
            self._caught_up_checks = 0
            return
        self._caught_up_checks += 1
        if self._caught_up_checks < 3:  # the same answer three times in a row, a second apart
            return
        await self.flush()
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
