"""``python -m benchmarks``: the same as ``benchmarks/run``."""

import sys

from benchmarks.bench import main

sys.exit(main())
