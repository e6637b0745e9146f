"""The run's progress lines on stderr."""

from __future__ import annotations

import sys
import time


class Progress:
    """Lines on stderr: ``[  12.3s] phase: message``; ``tick`` prints at most every ``every`` seconds."""

    def __init__(self, every: float = 5.0) -> None:
        self.started = time.monotonic()
        self.every = every
        self._last = 0.0

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)

    def tick(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self(message)

    def reset(self) -> None:
        self._last = time.monotonic()
