"""When a pipeline worker had its first raw message: the figure "start to first message" of a backfill.

The worker's own ``first_raw_message`` log line when it has one (its ``at``: epoch seconds at which the
first raw batch reached an ingest agent; the earliest of the two topics). Without it (versions that do not
log it), the CreateTime of the first records message the worker sent (the first message with a region's
key in its ``<group>-records`` topic; progress reports have an empty key): that is after the first raw
batch was also parsed in the ingest helper and handed to the producer, so it comes a little later than the
log line would.
"""

from __future__ import annotations

from benchmarks import kafka_io
from benchmarks.worker import WorkerProcess

LOG_EVENT = "first_raw_message"
FROM_LOG = f"log: {LOG_EVENT}"
FROM_RECORDS = "records topic: CreateTime of the first records message"


def first_message_at(bootstrap: str, worker: WorkerProcess, group: str) -> tuple[float | None, str | None]:
    """(epoch seconds of the worker's first raw message, how it was found); (None, None) if not found."""
    logged = [float(e.fields.get("at") or e.at) for e in worker.events() if e.event == LOG_EVENT]
    if logged:
        return min(logged), FROM_LOG
    at = kafka_io.first_keyed_timestamp(bootstrap, f"{group}-records")
    return (at, FROM_RECORDS) if at is not None else (None, None)


def start_to_first_message(
    bootstrap: str, worker: WorkerProcess, group: str
) -> dict[str, float | str | None]:
    """``start_to_first_message_seconds`` (from the command's start) and ``first_message_source``."""
    at, source = first_message_at(bootstrap, worker, group)
    return {
        "start_to_first_message_seconds": None if at is None else round(at - worker.started_at, 2),
        "first_message_source": source,
    }
