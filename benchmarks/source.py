"""The checkout under measurement: its root, paths as results show them, and the snapshot of
``solar_agents/`` that the workers run."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shown(path: Path) -> Path:
    """A path as results show it: relative to the repository, so that no machine's layout is recorded."""
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return Path(path.name)


def source_digest(root: Path) -> str:
    """A short hash of the pipeline's source under ``root`` (solar_agents/**/*.py)."""
    digest = hashlib.sha256()
    for path in sorted((root / "solar_agents").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def snapshot_source(target: Path) -> tuple[Path, str]:
    """Copy solar_agents/ into ``target`` for the workers: a long run must not mix versions of the pipeline
    when it is edited meanwhile (each worker would import whatever is on disk when it starts)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        ROOT / "solar_agents", target / "solar_agents", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return target, source_digest(target)
