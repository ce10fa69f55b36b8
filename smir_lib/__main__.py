"""``python -m smir_lib <job>`` is ``smir <job>``: see ``smir_lib.tools.cli``."""

import sys

from smir_lib.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
