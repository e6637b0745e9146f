"""``python -m benchmarks``: the same as ``benchmarks/run``."""

import sys

from benchmarks.cli import main

sys.exit(main())
