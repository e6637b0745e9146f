"""Progress of a long read (backfill, the replay's scan): messages read of a total, rate and ETA.

Pure: the callers give the counts (from real end offsets) and the clock; this module only formats and
decides when to print. On a terminal it draws one bar that rewrites itself; elsewhere (a log, a pipe) it
prints a plain line every few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

BAR_WIDTH = 30
LINE_EVERY_SECONDS = 5.0  # not a terminal: a line this often at most, so a log stays readable
BAR_EVERY_SECONDS = 0.2


def duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class Reading:
    """How far a read is, at one moment."""

    read: int
    total: int | None  # None while the end is not known yet
    seconds: float  # since the read started

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        if self.total is None:
            return None
        return 1.0 if self.total <= 0 else min(1.0, self.read / self.total)

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None while it cannot be told."""
        if self.total is None or self.rate <= 0:
            return None
        return max(0, self.total - self.read) / self.rate

    def line(self, what: str = "messages") -> str:
        """``read 1,200 / 5,000 messages (24.0 %), 300 msg/s, ETA 0:13``."""
        if self.total is None:
            return f"read {self.read:,} {what} (total not known yet), {self.rate:,.0f} msg/s"
        fraction = self.fraction or 0.0
        eta = self.eta
        left = "ETA " + (duration(eta) if eta is not None else "unknown")
        return (
            f"read {self.read:,} / {self.total:,} {what} ({fraction * 100:.1f} %), "
            f"{self.rate:,.0f} msg/s, {left}"
        )

    def bar(self, width: int = BAR_WIDTH) -> str:
        """``[#######.......................]  24.0 %  1,200/5,000  300 msg/s  ETA 0:13``."""
        fraction = self.fraction
        filled = round((fraction or 0.0) * width)
        cells = "#" * filled + "." * (width - filled)
        share = f"{fraction * 100:5.1f} %" if fraction is not None else "  ? %"
        total = f"{self.total:,}" if self.total is not None else "?"
        eta = self.eta
        return (
            f"[{cells}] {share}  {self.read:,}/{total}  {self.rate:,.0f} msg/s  "
            f"ETA {duration(eta) if eta is not None else '?'}"
        )


@dataclass
class ProgressPrinter:
    """Prints readings to ``out``: a bar on a terminal, else a line every few seconds."""

    out: TextIO
    what: str = "messages"
    clock: Callable[[], float] = time.monotonic
    tty: bool | None = None  # None: ask ``out``
    started: float = field(default=0.0)
    _last: float | None = None
    _drawn: bool = False

    def __post_init__(self) -> None:
        if self.tty is None:
            isatty = getattr(self.out, "isatty", None)
            self.tty = bool(isatty and isatty())
        self.started = self.clock()

    def reading(self, read: int, total: int | None) -> Reading:
        return Reading(read, total, self.clock() - self.started)

    def update(self, read: int, total: int | None, final: bool = False) -> None:
        """Show the reading if it is time to (always when ``final``)."""
        now = self.clock()
        every = BAR_EVERY_SECONDS if self.tty else LINE_EVERY_SECONDS
        if not final and self._last is not None and now - self._last < every:
            return
        self._last = now
        reading = self.reading(read, total)
        if self.tty:
            self.out.write("\r" + reading.bar())
            self._drawn = True
            if final:
                self.out.write("\n")
                self._drawn = False
        else:
            self.out.write(reading.line(self.what) + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the bar's line, so that what is printed next starts on its own."""
        if self._drawn:
            self.out.write("\n")
            self.out.flush()
            self._drawn = False
