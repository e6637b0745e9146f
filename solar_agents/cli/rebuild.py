"""The ``rebuild`` command: remove the local table state, so that the next start restores it from the
changelogs; and whether a worker runs on that state, which it and other commands refuse."""

from __future__ import annotations

import fcntl
import shutil
import sys
from pathlib import Path

from solar_agents.runtime.worker import WORKER_LOCK


def running_here(tabledir: Path) -> list[Path]:
    """Locks of this DATA_DIR held by a running worker: its own (from its start) and its table stores'
    (RocksDB locks their LOCK files)."""
    held = []
    for lock in sorted([*tabledir.glob(WORKER_LOCK), *tabledir.glob("*.db/LOCK")]):
        with lock.open("rb+") as handle:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                held.append(lock.parent)
            else:
                fcntl.lockf(handle, fcntl.LOCK_UN)
    return held


def refused_while_running(tabledir: Path) -> bool:
    """Whether a worker runs on this state, which the caller then refuses to touch (said on stderr)."""
    held = running_here(tabledir)
    if held:
        print(f"refused: a worker is running on this state ({held[0]}); stop it first", file=sys.stderr)
    return bool(held)


def run_rebuild(tabledir: Path) -> int:
    if refused_while_running(tabledir):
        return 2
    entries = sorted(tabledir.glob("*")) if tabledir.exists() else []
    if not entries:
        print(f"nothing to remove: {tabledir} holds no table state")
        return 0
    for entry in entries:
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else 0
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        print(f"removed {entry} ({size / 1e6:.1f} MB)")
    print("The next worker start restores the tables from their changelog topics;")
    print('it logs "tables_recovered" with the seconds the restore took.')
    return 0
