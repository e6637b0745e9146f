"""CLI commands of the app, listed by ``faust -A solar_agents --help``.

- ``demo``: the embedded default: a local broker and PostgreSQL, the real data set flowing, a worker.
- ``backfill``: process everything in the topics, write it, print a summary and exit once caught up.
- ``replay``: move the group back so that every row from a time on is rewritten by the next start.
- ``rebuild``: remove the local table state so that the next start restores it from the changelogs.
- ``rows``: print the latest rows of the output table.

Each is registered here and runs from the module of its name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import faust
from faust.cli import AppCommand, option

from solar_agents.cli.demo.run import demo_until_stopped
from solar_agents.cli.errors import exit_on_error
from solar_agents.cli.rebuild import run_rebuild
from solar_agents.cli.replay import run_replay
from solar_agents.cli.rows import print_rows
from solar_agents.cli.worker_process import BackfillCommand, backfill_command
from solar_agents.settings import Settings


def register_commands(app: faust.App, settings: Settings, enable_backfill: Callable[[], None]) -> None:

    @app.command(
        option("--rate", type=float, default=100.0, help="Hours of the data set produced per second."),
        # Not --workdir: faust takes that from anywhere on the command line as its own, and changes into it.
        option("--dir", "workdir", type=str, default="var/demo", help="Where the local services keep data."),
    )
    async def demo(self: AppCommand, rate: float, workdir: str) -> None:
        """Run it all locally: broker, PostgreSQL, the real data set flowing in, a worker, the web view."""
        await demo_until_stopped(settings, rate, Path(workdir))

    # A worker command: Faust runs the app, not this function (``BackfillCommand``).
    @app.command(*BackfillCommand.options, base=backfill_command(settings, enable_backfill))
    async def backfill(self: AppCommand) -> None:
        """Process everything in the topics, write it, and exit 0 with a summary once caught up."""

    @app.command(
        option(
            "--from",
            "from_",
            type=str,
            default=None,
            help="Event time (ISO 8601) from which every row is rewritten; omitted: the whole history.",
        ),
        option("--region", type=str, default=None, help="Only this region's rows (default: all)."),
        option(
            "--accept-definitions",
            "accept",
            is_flag=True,
            default=False,
            help="Store the changed feature definitions as holding from --from (rows before keep the old).",
        ),
    )
    async def replay(self: AppCommand, from_: str | None, region: str | None, accept: bool) -> None:
        """Move the group back on the raw topics so the next start rewrites every row from --from on."""
        raise SystemExit(await run_replay(settings, self.app.conf.tabledir, from_, region, accept))

    @app.command()
    async def rebuild(self: AppCommand) -> None:
        """Remove the local table state; the next start restores it from the changelogs."""
        raise SystemExit(run_rebuild(self.app.conf.tabledir))

    @app.command(
        option("--limit", type=int, default=24, help="How many rows."),
        option("--region", type=str, default=None, help="Only this region."),
    )
    async def rows(self: AppCommand, limit: int, region: str | None) -> None:
        """Print the latest rows of the output table."""
        exit_on_error(lambda: print_rows(settings, limit, region))
