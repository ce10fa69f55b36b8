#!/usr/bin/env python
"""A one-line wrapper, kept because the kit's brief names it: ``python data_download.py NAME`` is
``smir download NAME`` (the same code: :func:`smir_lib.data.download.run`, through
:func:`smir_lib.tools.cli.main`). ``smir download --help`` lists the datasets and options."""

import sys

from smir_lib.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
