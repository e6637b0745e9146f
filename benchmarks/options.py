"""What one run measures: its size and the options of its command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FULL_REGIONS, FULL_DAYS = 16, 365
QUICK_REGIONS, QUICK_DAYS = 8, 30
PARTITIONS = 8


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

    @property
    def full(self) -> bool:
        return (self.regions, self.days) == (FULL_REGIONS, FULL_DAYS)
