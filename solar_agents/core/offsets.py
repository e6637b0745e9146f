"""Every offset of a partition handed on, in order: what each agent checks of its batches (pure).

Faust hands fetched records on to the agents one by one. A pause, seek or rebalance that comes in the
middle of that can drop a record there while the later records of its partition go on; and Faust's commit
then passes over it, because a forward jump in offsets counts as a gap (as for transaction markers), and
one missing record right after the committed offset is passed even without one. Nothing reads such a
record again: valid input lost without a trace.

So each agent follows, per partition, the next offset it expects. A batch whose records of a partition jump
past it has a hole: the records in it are read directly (``connect.range_reader.RangeReader``) and put
back in front of the record that showed the hole, so they are processed, in order, before anything after
them is acked. A hole that holds no records (transaction markers, a compacted or expired range) is let pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


class Placed(Protocol):
    """Where a record sits in its topic."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=Placed)


@dataclass(frozen=True, slots=True)
class Hole:
    """Offsets ``start`` to ``end`` (exclusive) of ``partition`` that were not handed on."""

    partition: int
    start: int
    end: int  # the offset handed on after the hole


class Continuity:
    """For one topic: the next offset expected per partition, and the holes of each batch against it."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}

    def holes(self, records: Iterable[Placed], committed: Callable[[int], int | None]) -> list[Hole]:
        """Holes among ``records`` (in hand-over order); ``committed(partition)`` is the group's committed
        offset, where a partition seen for the first time (or again after a rebalance) starts.

        An offset below the expected one is a read again from an earlier place (a seek after a rebalance),
        never a hole.
        """
        found: list[Hole] = []
        expected = self._next
        for record in records:
            partition, offset = record.partition, record.offset
            start = expected.get(partition)
            low = committed(partition)
            if start is None or (low is not None and low > start):
                start = low  # the group has read up to there, on this worker or on another
            if start is not None and offset > start:
                found.append(Hole(partition, start, offset))
            expected[partition] = offset + 1
        return found


def fill(records: Sequence[R], found: Mapping[Hole, Sequence[R]]) -> list[R]:
    """``records`` with what was read of each hole put back in front of the record that ended it."""
    if not found:
        return list(records)
    before = {(hole.partition, hole.end): list(read) for hole, read in found.items()}
    out: list[R] = []
    for record in records:
        out.extend(before.pop((record.partition, record.offset), ()))
        out.append(record)
    return out


def runs(offsets: Iterable[int], max_gap: int) -> list[tuple[int, int]]:
    """Ranges (start, end exclusive) covering ``offsets``, one range across gaps of up to ``max_gap``
    offsets: what to read to find them again, in few reads."""
    out: list[tuple[int, int]] = []
    for offset in sorted(set(offsets)):
        if out and offset - out[-1][1] <= max_gap:
            out[-1] = (out[-1][0], offset + 1)
        else:
            out.append((offset, offset + 1))
    return out
