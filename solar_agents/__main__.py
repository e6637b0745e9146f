"""``python -m solar_agents ARGS`` (or ``solar-agents ARGS``) is ``faust -A solar_agents ARGS``."""

from __future__ import annotations

import sys


def main() -> None:
    from faust.cli.faust import cli

    cli(["-A", "solar_agents", *sys.argv[1:]])


if __name__ == "__main__":
    main()
