"""The three steps in-process on the messy scenario feed: the rows equal the reference."""

from __future__ import annotations

from reference import assert_rows_equal
from step_harness import Harness, as_rows, raw_feed, reference, run

from solar_agents.core.features import SPEC_ROWS
from solar_agents.steps.write import rows_to_write


def test_steps_in_process_equal_the_reference() -> None:
    raw = raw_feed(hours=240, regions=("DE_a", "DE_b", "DE_c"))
    harness = Harness()
    run(harness, raw, ingest_batch=50, align_batch=7)
    assert harness.dead_letters, "the scenario's malformed messages are rejected"
    assert_rows_equal(reference(raw), as_rows(rows_to_write(harness.rows_messages, SPEC_ROWS)))
