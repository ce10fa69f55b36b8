#!/usr/bin/env python
"""Download the SMIR datasets: ``python data_download.py {voc,cityscapes,nassar,sugarbeets,cwfid,imagenet-weights,all} [--root DIR]``.

A thin command line over :mod:`smir_lib.data.download` (importable: ``from data_download import main``).
The built-in ``synthetic`` dataset needs no download.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the download command line; returns the exit status."""
    from smir_lib.data.download import main as download_main

    return download_main(argv)


if __name__ == "__main__":
    sys.exit(main())
