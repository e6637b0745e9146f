"""One region's records applied to its state: the rows they complete or change, the hours stored and those
retention forgets. The align step (``steps.align``) runs it for every region of a batch.

Pure: no Faust, no broker.
"""

from __future__ import annotations

from dataclasses import dataclass

from solar_agents.core.features import Row, RowType, feature_rows
from solar_agents.core.hours import Record, RegionHours, Retention
from solar_agents.core.read_progress import NOT_YET_READ, Replay


@dataclass(slots=True)
class Aligned:
    """What one batch of a region's records changed: rows to (re)write, hours to store and to forget."""

    rows: list[Row]
    stored_hours: set[int]
    pruned_hours: list[int]
    late: int


def align_batch(
    state: RegionHours,
    records: list[Record],
    rows_of: RowType,
    retention: Retention,
    floor: int | None = None,
    replay: Replay | None = None,
    uncommitted: int | None = None,
    offset: int | None = None,
    through: int | None = None,
    floors: list[tuple[int, int | None]] | None = None,
) -> Aligned:
    """The step of the align agent: fold records into the region's state, compute the rows they touch,
    then apply ``retention`` (the longest reach of the features and the allowed lateness). Rows come
    before retention, so a late record is still written from whatever history is kept (SPEC). ``floor``
    holds the watermark below raw partitions still being read; a ``replay`` in progress keeps rows before
    its start from being rewritten; ``uncommitted`` is the lowest hour that a crash could deliver again,
    whose rows' history must outlive it. ``offset`` is the batch's position in its records partition: one
    at or before the last applied is read again after a restart; ``through`` the last one of records from
    several messages (``offset`` the first), and ``floors`` each message's floor when it came (lateness)."""
    features = rows_of.features
    rereading = offset is not None and state.applied_through is not None and offset <= state.applied_through
    applied = state.apply(records, retention.lateness_hours, floor, floors)
    touched = features.affected_hours(applied.solar_hours, applied.weather_hours)
    replayed = replay is not None and replay.covers(state.region)
    if (
        (applied.repeated_solar or applied.repeated_weather)
        and state.pruned_below is not None
        and not replayed
    ):
        # A record kept already (read again after a crash, or a duplicate) rewrites its rows in case their
        # first write was lost, but never from history cut short by retention: those rows were right. A
        # replay of this region is the exception: it reads again the history its rows need, and each row is
        # computed again as its inputs come back (a feature added since may have no value there yet).
        new = features.affected_hours(
            applied.solar_hours - applied.repeated_solar,
            applied.weather_hours - applied.repeated_weather,
        )
        touched = new | {h for h in touched if retention.history_kept(h, state.pruned_below)}
    if replay is not None:
        touched = {h for h in touched if not replay.hides(state.region, h)}
    rows = feature_rows(state, touched, rows_of)
    if rereading:
        # The batches up to the last one applied come back in order, each needing the history it had the
        # first time: nothing may be pruned until they are through.
        keep_from: int | None = NOT_YET_READ
    else:
        keep_from = None if uncommitted is None else retention.history_from(uncommitted)
    last = offset if through is None else through
    if last is not None and (state.applied_through is None or last > state.applied_through):
        state.applied_through = last
    pruned = state.prune(retention, floor, applied.hours, keep_from)
    return Aligned(rows, applied.hours.difference(pruned), pruned, applied.late)
