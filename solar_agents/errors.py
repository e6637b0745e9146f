"""Errors that end the worker with one line and exit code 2: something the user must fix, not retry."""

from __future__ import annotations


class Refused(Exception):
    """A condition no retry can mend (a changed feature definition, a missing privilege); ``str()`` is the
    one line for the user, naming what to change or run. The worker logs it, prints it and exits 2."""
