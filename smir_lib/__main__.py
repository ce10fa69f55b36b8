"""``python -m smir_lib ...``: see ``smir_lib.cli``."""

import sys

from smir_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
