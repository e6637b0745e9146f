"""What one run measures: its size and the options of its command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FULL_REGIONS, FULL_DAYS = 16, 365
QUICK_REGIONS, QUICK_DAYS = 8, 30
PARTITIONS = 8
# --regions-scaling: the sizes (regions), and the raw messages each size has about (the full size's count:
# 16 regions x 365 days x 24 hours x 2 feeds; --quick: a budget that runs in a few minutes).
SCALING_REGIONS = (16, 1000, 5000)
SCALING_MESSAGES = FULL_REGIONS * FULL_DAYS * 24 * 2
QUICK_SCALING_MESSAGES = 30_000
# Rounds of every size: one size's CPU per message moves by 10 % or more from one run to the next on this
# machine, as much as the ratios have to show, so each ratio is the median of a round's.
SCALING_ROUNDS = 3


@dataclass
class Options:
    regions: int
    days: int
    quick: bool
    seed: int
    repeats: int
    live_rate: float
    live_seconds: float
    profile: bool
    budget_4x: float
    output: Path
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    before: dict[str, Any] | None = None  # an earlier results file (--before), and where it came from
    before_path: Path | None = None
    regions_scaling: bool = False  # the scaling run instead of the full one
    scaling_regions: tuple[int, ...] = SCALING_REGIONS
    scaling_messages: int = SCALING_MESSAGES
    scaling_rounds: int = SCALING_ROUNDS
    uvloop_pairs: int = 0  # pairs of runs on asyncio's loop and on uvloop, at the end of the run

    @property
    def full(self) -> bool:
        return (self.regions, self.days) == (FULL_REGIONS, FULL_DAYS)
