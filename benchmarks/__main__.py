"""``python -m benchmarks [--quick | --full] [--only ...]``: see ``benchmarks.suite``."""

import sys

from .suite import main

sys.exit(main())
