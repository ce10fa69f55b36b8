"""Run the reproduction study on a CPU budget and write ``reproduction_cpu.{md,json}``.

A thin command line over the library: the study loop is ``smir_lib.study.reproduction.run_study`` (the loop
notebook 07 calls) and the report ``smir_lib.study.reproduction_report.report``. Each dataset is pretrained
with the other one as its "cross" pool. Each dataset can run in its own process
(``--datasets cwfid``), and ``--seeds`` may be split between processes: every finished part is
read back, not redone, so calling it again with all seeds and ``--report`` only collects the
results (it re-tests each fine-tuned checkpoint and re-measures the mask shares)::

    export OMP_NUM_THREADS=1
    python notebooks/results/reproduce.py --datasets cwfid --seeds 0 1 cache_images=true &
    python notebooks/results/reproduce.py --datasets cwfid --seeds 2 cache_images=true &
    python notebooks/results/reproduce.py --datasets synthetic --seeds 0 1 2; wait
    python notebooks/results/reproduce.py --datasets cwfid synthetic --seeds 0 1 2 \\
        --report notebooks/results/reproduction_cpu

The budget is ``smir_lib/configs/study_cpu.yaml`` (``--config``, default); ``key=value``
arguments override it (``cache_images=true`` keeps decoded images in memory: CWFID otherwise
decodes a 1296x966 PNG per item). ``smir_lib.study.reproduction_report.GPU_COMMAND`` runs the paper preset.
One thread per process: on a busy 2-core machine two threads per process ran ~10x slower.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

CROSS = {"cwfid": "synthetic", "synthetic": "cwfid"}
"""The cross pool of each dataset."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="study_cpu", help="preset, packaged config or file")
    parser.add_argument("--datasets", nargs="+", default=["cwfid", "synthetic"], choices=sorted(CROSS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run-dir", default="runs/study_cpu")
    parser.add_argument("--share-images", type=int, default=35,
                        help="training images on which the masks' share of plants is measured")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--report", default=None, help="write <REPORT>.md and <REPORT>.json")
    parser.add_argument("--note", default=None, help="a line for the report (e.g. how the runs were split)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from smir_lib.engine.config import parse_overrides
    from smir_lib.study.reproduction import run_study
    from smir_lib.study.reproduction_report import report

    torch.set_num_threads(args.threads)
    tic = time.perf_counter()
    overrides = parse_overrides(args.overrides)
    results = {}
    for dataset in args.datasets:
        results[dataset] = run_study(dataset, args.seeds, Path(args.run_dir) / dataset, profile=args.config,
                                     cross_dataset=CROSS[dataset], overrides=overrides,
                                     n_share_images=args.share_images)
        print(results[dataset]["verdict"], flush=True)
    if args.report:
        command = "python " + " ".join(shlex.quote(a) for a in (sys.argv if argv is None else
                                                                 ["notebooks/results/reproduce.py", *argv]))
        run_dirs = {d: Path(args.run_dir) / d for d in results}
        report(results, command, time.perf_counter() - tic, Path(args.report), run_dirs, args.note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
