"""The write step: the rows of a batch of rows messages."""

from __future__ import annotations

import json

from solar_agents.core.features import SPEC_ROWS, FeatureRow
from solar_agents.core.messages import Message, MessageBatch
from solar_agents.core.wire import encode_rows
from solar_agents.steps.write import rows_to_write, write_messages


def test_an_unreadable_rows_message_is_left_out_not_fatal() -> None:
    good = Message("rows", 0, 0, None, encode_rows([], SPEC_ROWS))
    bad = Message("rows", 0, 1, None, json.dumps({"columns": ["region"], "rows": [["R"]]}).encode())
    assert rows_to_write([good, bad], SPEC_ROWS) == []


class ListSink:
    """A sink that keeps what it is given, statement by statement."""

    rows = SPEC_ROWS

    def __init__(self) -> None:
        self.statements: list[list[FeatureRow]] = []

    def write(self, rows: list[FeatureRow]) -> int:
        self.statements.append(rows)
        return len(rows)


def row(region: str, hour: int, mw: float) -> FeatureRow:
    return FeatureRow(region, hour, mw, None, None, None, 53.6, 9.9, mw, None, None, None, None, 0, 0, False)


def test_a_batch_writes_the_latest_row_per_key_in_bounded_statements() -> None:
    first = [row("R", h, 1.0) for h in range(5)]
    again = [row("R", 2, 9.0), row("S", 0, 3.0)]  # a later computation of (R, 2) wins
    batch = MessageBatch.of(
        "rows",
        [
            Message("rows", 0, 0, None, encode_rows(first, SPEC_ROWS)),
            Message("rows", 0, 1, None, encode_rows(again, SPEC_ROWS)),
        ],
    )
    sink = ListSink()
    written = write_messages(sink, batch, batch_size=4)
    assert [count for count, _seconds in written] == [4, 2]
    rows = [r for statement in sink.statements for r in statement]
    assert len(rows) == len({r.key for r in rows}) == 6
    assert next(r for r in rows if r.key == ("R", 2)).production_mw == 9.0
