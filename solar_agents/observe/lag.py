"""Consumer lag: the one place where a worker's offsets per partition are read and its lag computed.

The backfill's exit and progress, the web view's lag table and ``/metrics`` all read it from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from faust.types import TP, ConsumerT

from solar_agents.runtime.faust_compat import committed_offsets, read_offsets


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """Where a worker stands on one assigned partition.

    ``highwater`` is the one of the latest fetch response, kept by the Kafka client: ListOffsets is wrong on
    some brokers after batched writes, a fetch response is not. None while no fetch has answered.
    """

    topic: str
    partition: int
    highwater: int | None
    committed: int | None  # processed through to the sink: the writer commits only after its write
    position: int | None  # the next offset this worker reads

    @property
    def lag(self) -> int | None:
        """High-water mark minus committed offset: what a restart now would read again or for the first
        time. Before the first commit it counts from the next offset to read; it is 0 for a partition never
        written to, else unknown (None)."""
        if self.highwater is None:
            return None
        if self.committed is not None:
            return max(0, self.highwater - self.committed)
        if self.position is not None:
            return max(0, self.highwater - self.position)
        return 0 if self.highwater == 0 else None

    @property
    def uncommitted(self) -> int | None:
        """Messages not yet processed through to the sink; None while the end is unknown. Unlike ``lag``,
        a partition with nothing committed counts in full: the backfill's "done" waits for the commit."""
        if self.highwater is None:
            return None
        return max(0, self.highwater - (self.committed or 0))

    @property
    def unread(self) -> int | None:
        """Messages not yet read by this worker; None while the end is unknown."""
        if self.highwater is None:
            return None
        return max(0, self.highwater - (self.position or 0))


def partition_offsets(consumer: ConsumerT, topics: Iterable[str]) -> list[PartitionOffsets]:
    """Each assigned partition of ``topics``, in the order of ``topics`` then by partition; empty before the
    consumer has an assignment (not started yet, or between generations)."""
    order = {topic: i for i, topic in enumerate(topics)}
    try:
        assigned = sorted(
            (tp for tp in consumer.assignment() if tp.topic in order),
            key=lambda tp: (order[tp.topic], tp.partition),
        )
    except Exception:  # not started yet, or between generations
        return []
    committed_at = committed_offsets(consumer)
    read_at = read_offsets(consumer)
    out = []
    for tp in assigned:
        out.append(_offsets(consumer, tp, committed_at.get(tp), read_at.get(tp)))
    return out


def _offsets(consumer: ConsumerT, tp: TP, committed: int | None, read: int | None) -> PartitionOffsets:
    highwater: int | None
    try:
        highwater = consumer.highwater(tp)
    except Exception:  # revoked between the two calls
        highwater = None
    position = read + 1 if read is not None else committed
    return PartitionOffsets(tp.topic, tp.partition, highwater, committed, position)
