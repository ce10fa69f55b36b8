"""One engine run in its own process, for ``benchmarks/engine.py``: prints a JSON line.

Run by path with ``PYTHONPATH=<tree>`` so that ``smir_lib`` is the engine of that tree (this
commit's, or a ``git worktree`` of an older commit): only the public entry points
``load_config``, ``pretrain_random`` and ``finetune`` are used, which both engines have::

    PYTHONPATH=/tmp/old python benchmarks/engine_child.py --kind pretrain --config fast \
        --epochs 1 2 5 --threads 1 --run-dir /tmp/run [key=value ...]

Each number of ``--epochs`` is one whole run (in its own run folder), timed in this process's
CPU seconds and in wall seconds, with the engine's own per-epoch ``images_per_s`` (training
only, wall clock) from its history. The first run pays for imports and lazy initialisation;
the difference of two later runs is the CPU cost of their extra epochs (training, validation
and checkpoints), which another process's load does not change.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=["pretrain", "finetune"], required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--epochs", type=int, nargs="+", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import smir_lib
    from smir_lib.engine.config import load_config, parse_overrides

    epochs_key = "pretrain_epochs" if args.kind == "pretrain" else "finetune_epochs"
    runs = []
    for n, epochs in enumerate(args.epochs):
        overrides = {**parse_overrides(args.overrides), "progress": False, epochs_key: epochs}
        cfg = load_config(args.config, overrides)
        run_dir = f"{args.run_dir}/run{n}"
        start, cpu_start = time.perf_counter(), time.process_time()
        if args.kind == "pretrain":
            from smir_lib.engine.pretrain import pretrain_random

            history = pretrain_random(cfg, run_dir).history
        else:
            from smir_lib.engine.finetune import finetune

            history = finetune(cfg, run_dir, "scratch")["history"]
        runs.append({"epochs": epochs, "wall_s": time.perf_counter() - start,
                     "cpu_s": time.process_time() - cpu_start,
                     "images_per_s": [row["images_per_s"] for row in history],
                     "images_per_epoch": round(history[-1]["images_per_s"] * history[-1]["seconds"])})
    print(json.dumps({
        "smir_lib": smir_lib.__file__, "runs": runs,
        "config": {k: v for k, v in cfg.to_dict().items()
                   if k in ("model", "image_size", "msssim_win", "amp", "channels_last",
                            "workers", "pretrain_batch", "finetune_batch", "dataset")},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
