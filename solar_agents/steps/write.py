"""The write step: a batch of rows messages -> upserts, the latest row per key, in bounded statements.

Pure but for the sink it is given (``sink.FeatureSink`` in the worker's writer helper, anything with its
``write`` in a test). ``runtime.write`` acks the batch once this returns.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from solar_agents.core.features import Row, RowType, latest_per_key
from solar_agents.core.messages import MessageBatch, MessageLike
from solar_agents.core.wire import decode_rows
from solar_agents.observe.log import get_logger

log = get_logger(__name__)


class Sink(Protocol):
    """Where rows go: upserts by (region, timestamp) of rows of its row type; returns the rows written."""

    @property
    def rows(self) -> RowType: ...

    def write(self, rows: list[Row]) -> int: ...


def rows_to_write(messages: Iterable[MessageLike], row_type: RowType) -> list[Row]:
    """The rows of a batch of the rows topic as ``row_type``'s, one per key: the latest computed.

    A message this worker cannot read (written by another version that lacks a base column) is logged and
    left out rather than stopping the writer; ``replay`` computes its rows again.
    """
    rows: list[Row] = []
    for message in messages:
        if message.value is None:
            continue
        try:
            rows.extend(decode_rows(message.value, row_type))
        except (ValueError, KeyError, TypeError) as exc:
            log.error(
                "rows_message_unreadable", partition=message.partition, offset=message.offset, error=str(exc)
            )
    return latest_per_key(rows)


def write_messages(sink: Sink, batch: MessageBatch, batch_size: int) -> list[tuple[int, float]]:
    """The write step on a batch of the rows topic: its rows, the latest per key, upserted in statements of
    at most ``batch_size`` rows. Returns (rows, seconds) of each statement; raises psycopg2.Error."""
    rows = rows_to_write(batch.messages(), sink.rows)
    written = []
    for start in range(0, len(rows), batch_size):
        started = time.perf_counter()
        count = sink.write(rows[start : start + batch_size])
        written.append((count, time.perf_counter() - started))
    return written
