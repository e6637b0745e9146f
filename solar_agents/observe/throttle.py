"""Log lines that repeat, throttled: the first of each kind in full, then one summary per interval with the
count of each kind. Pure: the caller logs, and gives the time.

100,000 bad messages wrote 100,000 warnings (26.7 MB of log in 36 s): each is on the dead-letter topic and
counted on /metrics already, so the log need only say what kinds arrive and how many.
"""

from __future__ import annotations

from collections import Counter

# Kinds remembered; past them, a new kind is counted as "other" (a producer may send endless variety).
MAX_KINDS = 100
OTHER = "other"


def reason_kind(reason: str) -> str:
    """What a dead letter's reason is about, without its values: the text before the first colon
    (``not JSON``, ``field 'production_mw'``, ``region limit``), or the whole reason when short."""
    return " ".join(reason.split(":", 1)[0].split())[:80] or "unknown"


class Throttle:
    """Which occurrences to log in full, and the counts of the others for a summary line."""

    def __init__(self, max_kinds: int = MAX_KINDS) -> None:
        self.max_kinds = max_kinds
        self.seen: set[str] = set()
        self.counts: Counter[str] = Counter()  # per kind, since the last summary
        self.quiet = 0  # of those, not logged in full
        self.since: float | None = None  # when the first of them came

    def first(self, kind: str, now: float) -> bool:
        """Count one occurrence of ``kind``; True when it is the first of its kind (log it in full)."""
        if kind not in self.seen and len(self.seen) >= self.max_kinds:
            kind = OTHER
        if self.since is None:
            self.since = now
        self.counts[kind] += 1
        if kind in self.seen:
            self.quiet += 1
            return False
        self.seen.add(kind)
        return True

    def summary(self, now: float) -> dict[str, object] | None:
        """The fields of a summary line, and the counts start again; None when every occurrence since the
        last summary was logged in full (nothing to add)."""
        if not self.quiet or self.since is None:
            self.counts.clear()
            self.since = None
            return None
        fields: dict[str, object] = {
            "counts": dict(self.counts.most_common()),
            "total": sum(self.counts.values()),
            "not_logged": self.quiet,
            "seconds": round(now - self.since, 1),
        }
        self.counts.clear()
        self.quiet = 0
        self.since = None
        return fields
