"""How a command fails: a CommandError, one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class CommandError(Exception):
    """A command cannot do what was asked; ``str()`` is the one line for the user (exit code 2)."""


def exit_on_error(body: Callable[[], T]) -> T:
    """Run a command's body: a CommandError ends it with one line on stderr and exit code 2."""
    try:
        return body()
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
