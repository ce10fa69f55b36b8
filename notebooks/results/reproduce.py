"""Run the reproduction study (issue 8) on a CPU budget and write ``reproduction_cpu.{md,json}``.

The study itself is ``smir_lib.study.run_study`` (the loop notebook 07 calls); this script only
runs it for the datasets asked for, each with the other one as the "cross" pretraining pool, and
writes one combined table. Each dataset can run in its own process (``--datasets cwfid``), and
``--seeds`` may be split between processes: every finished part is read back, not redone, so
calling it again with all seeds and ``--report`` only collects the results::

    OMP_NUM_THREADS=1 python notebooks/results/reproduce.py --datasets cwfid --seeds 0 1 2
    OMP_NUM_THREADS=1 python notebooks/results/reproduce.py --datasets synthetic --seeds 0 1 2
    OMP_NUM_THREADS=1 python notebooks/results/reproduce.py --datasets cwfid synthetic \
        --seeds 0 1 2 --report notebooks/results/reproduction_cpu

One thread per process: on a busy 2-core machine two threads per process ran ~10x slower.
``--cache-files`` keeps decoded image and label files in memory (the same tensors, returned as
copies): CWFID decodes 1296x966 PNGs for every item otherwise, which doubles the time.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch

CROSS = {"cwfid": "synthetic", "synthetic": "cwfid"}


def cache_decoded_files(patch=setattr) -> None:
    """Memoise ``smir_lib.data.base`` file decoding (images and labels); callers get copies.

    ``patch(owner, name, value)`` replaces the functions (``setattr``, or pytest's
    ``monkeypatch.setattr`` so that a test undoes it).
    """
    from smir_lib.data import base

    load = functools.lru_cache(maxsize=None)(base.load_image)
    patch(base, "load_image", lambda path: load(path).clone())
    labels: dict = {}  # label file -> decoded array (a file decodes the same in every split)

    def load_label(self, index: int) -> torch.Tensor:
        path = self.labels[index]
        if path not in labels:
            labels[path] = self.decode_label(path)
        return torch.from_numpy(labels[path].copy()).long()

    patch(base.SegmentationFiles, "load_label", load_label)


def report(results: dict[str, dict], command: str, wall_s: float | None, out_stem: Path) -> dict:
    """Write ``out_stem.json`` and ``out_stem.md`` from ``{dataset: run_study results}``."""
    from smir_lib.study import results_markdown, verdict

    sections, combined = [], {"command": command, "wall_seconds": wall_s, "datasets": {}}
    for dataset, res in results.items():
        rows = res["inits"]
        lowest = {init: res["class_names"][min(range(len(row["per_class_mean"])),
                                               key=lambda c: row["per_class_mean"][c])]
                  for init, row in rows.items()}
        verdicts = [verdict(res, "selective", "random"), verdict(res, "random", "scratch"),
                    verdict(res, "selective", "scratch"), verdict(res, "selective", "selective_cross")]
        if "imagenet" in rows:
            verdicts.append(verdict(res, "selective", "imagenet"))
        share = res["object_share_hidden"]
        combined["datasets"][dataset] = {**res, "lowest_class_per_init": lowest, "verdicts": verdicts}
        per_seed = ", ".join(f"{k} {v['mean']:.3f}" for k, v in share.items())
        sections += [f"### {dataset} (cross pool: {res['cross_dataset']}, seeds {res['seeds']})", "",
                     results_markdown(res), "",
                     "Lowest class (by mean IoU) per initialisation: "
                     + ", ".join(f"{rows[i]['label']}: {c}" for i, c in lowest.items()) + ".", "",
                     f"Share of hidden labelled pixels on plants (all classes but the most frequent), "
                     f"mean over seeds: {per_seed} (image = share of plant pixels in the images).", "",
                     *[f"- {v}" for v in verdicts], ""]
    header = [f"Produced by: `{command}`", ""]
    if wall_s is not None:
        header += [f"Wall time of the collecting call: {wall_s:.0f} s.", ""]
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".json").write_text(json.dumps(combined, indent=2, default=str))
    out_stem.with_suffix(".md").write_text("\n".join(header + sections))
    return combined


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="smir_lib/configs/study_cpu.yaml")
    parser.add_argument("--datasets", nargs="+", default=["cwfid", "synthetic"], choices=sorted(CROSS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run-dir", default="runs/study_cpu")
    parser.add_argument("--share-images", type=int, default=35)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-files", action="store_true")
    parser.add_argument("--report", default=None, help="write <REPORT>.md and <REPORT>.json")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    import shlex
    import sys

    torch.set_num_threads(args.threads)
    if args.cache_files:
        cache_decoded_files()
    from smir_lib.config import parse_overrides
    from smir_lib.study import run_study

    tic = time.perf_counter()
    overrides = parse_overrides(args.overrides)
    results = {}
    for dataset in args.datasets:
        results[dataset] = run_study(dataset, args.seeds, Path(args.run_dir) / dataset, profile=args.config,
                                     cross_dataset=CROSS[dataset], overrides=overrides,
                                     n_share_images=args.share_images)
        print(results[dataset]["verdict"], flush=True)
    if args.report:
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        report(results, command, time.perf_counter() - tic, Path(args.report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
