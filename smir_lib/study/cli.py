"""``smir study`` and ``smir reproduce``: the two studies' options and what each job calls.

The budget study (issue 15), planned, run in shards, reported::

    export OMP_NUM_THREADS=1 SMIR_DATA_DIR=/path/to/data      # the folder holding cwfid/
    smir study plan --protocol cpu --timings runs/study_reduced
    smir study run --protocol cpu --root runs/study_cpu --shard 0/2 &
    smir study run --protocol cpu --root runs/study_cpu --shard 1/2 &
    wait
    smir study report --protocol cpu --root runs/study_cpu --out notebooks/results/study_cpu \\
        --timings runs/study_cpu
    smir study readme notebooks/results/study_cpu.json \\
        --checks notebooks/results/study_cpu_check_2x.json notebooks/results/study_cpu_check_35.json

``run`` resumes: start it again (same command) after a kill or in a new session and it
continues where the units stopped; any number of processes may run at once (each takes its
share first, then helps with the rest). ``report`` collects whatever has finished and lists what
is missing. ``readme`` rewrites the study block (:func:`smir_lib.study.tables.write_readme_section`)
from the report's JSON (a strategies report's block, or the long budget curve's, from theirs). ``rerun`` runs one cell of a committed report again in a fresh folder and
prints it beside the committed numbers (``run --only PATTERN`` runs any subset of the units)::

    smir study rerun notebooks/results/study_cpu.json finetune/cwfid/seed_0/train_4/selective_9000

The reproduction study on a CPU budget (notebook 07's loop, :func:`smir_lib.study.reproduction.run_study`,
reported by :func:`smir_lib.study.reproduction_report.report`). Each dataset is pretrained with
the other one as its "cross" pool; each dataset can run in its own process (``--datasets cwfid``)
and ``--seeds`` may be split between processes: every finished part is read back, not redone, so
calling it again with all seeds and ``--report`` only collects the results (it re-tests each
fine-tuned checkpoint and re-measures the mask shares)::

    smir reproduce --datasets cwfid --seeds 0 1 cache_images=true &
    smir reproduce --datasets cwfid --seeds 2 cache_images=true &
    smir reproduce --datasets synthetic --seeds 0 1 2; wait
    smir reproduce --datasets cwfid synthetic --seeds 0 1 2 --report notebooks/results/reproduction_cpu

Its budget is ``smir_lib/configs/study_cpu.yaml`` (``--config``, default); ``key=value``
arguments override it (``cache_images=true`` keeps decoded images in memory: CWFID otherwise
decodes a 1296x966 PNG per item). :data:`smir_lib.study.reproduction_report.GPU_COMMAND` runs the
paper preset.

One torch thread per process (``--threads``): on busy shared cores more threads per process ran
slower (on a busy 2-core machine two threads per process ran about 10x slower).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from smir_lib.engine.config import parse_overrides
from smir_lib.runtime import thread_count
from smir_lib.study import mechanism
from smir_lib.study.plan import load_protocol, parse_shard
from smir_lib.study.reproduction import run_study
from smir_lib.study.reproduction_report import report
from smir_lib.study.rerun import rerun_cell, rerun_lines
from smir_lib.study.run import run_units
from smir_lib.study.tables import RESULTS_README, plan_lines, write_readme_section, write_report

__all__ = ["CROSS", "add_study_arguments", "study", "add_reproduce_arguments", "reproduce"]

CROSS = {"cwfid": "synthetic", "synthetic": "cwfid"}
"""The cross pool of each dataset in ``smir reproduce``."""


def add_study_arguments(parser: argparse.ArgumentParser) -> None:
    """The sub-commands of ``smir study`` (plan, run, report, readme, rerun) and their options."""
    sub = parser.add_subparsers(dest="study_command", required=True,
                                metavar="{plan,run,report,readme,rerun,mechanism}")
    helps = {"plan": "list a protocol's units (and, with --timings, its image-steps and time)",
             "run": "run or resume a protocol's units (any number of processes share them)",
             "report": "collect the finished units into <OUT>.md, .json and figures"}
    for name in ("plan", "run", "report"):
        p = sub.add_parser(name, help=helps[name], description=helps[name])
        p.add_argument("--protocol", default="cpu", help="packaged protocol (toy, reduced, cpu, gpu) or a YAML file")
        p.add_argument("--seeds", nargs="+", type=int, default=None, help="override the protocol's seeds")
        p.add_argument("--root", default=None, help="study folder (default runs/study_<protocol>)")
        p.add_argument("--threads", type=thread_count, default=1,
                       help="torch intra-op threads (at most the usable cores)")
    plan = sub.choices["plan"]
    plan.add_argument("--timings", nargs="+", default=None,
                      help="study roots whose units.jsonl give measured seconds per unit")
    plan.add_argument("--processes", type=int, default=2, help="processes the time estimate assumes (default 2)")
    run = sub.choices["run"]
    run.add_argument("--shard", default="0/1", help="i/n: this process is i of n (0-based)")
    run.add_argument("--no-steal", action="store_true", help="run only this shard's units (and their pretraining)")
    run.add_argument("--wait", type=float, default=3600.0, help="seconds to wait for units other processes hold")
    run.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                     help="run only the units whose folder matches (shell patterns, e.g. 'finetune/cwfid/*/train_4/*')")
    rep = sub.choices["report"]
    rep.add_argument("--out", required=True, help="write <OUT>.md, <OUT>.json and <OUT>_*.png")
    rep.add_argument("--note", default=None, help="a line for the report (how the runs were split, the machine)")
    rep.add_argument("--timings", nargs="+", default=None, help="study roots whose units.jsonl estimate a protocol's time")
    rep.add_argument("--estimate-for", default="cpu", help="the protocol --timings estimates (default cpu)")
    rep.add_argument("--force", action="store_true", help="replace a report of more finished units than --root has")
    rep.add_argument("--mechanism", default=None,
                     help="a mechanism report's JSON (smir study mechanism): each strategy's effect beside it")
    rep.add_argument("--beside", nargs="+", default=(),
                     help="earlier reports' JSON whose other pretraining budgets join the budget figure")
    help_ = ("rewrite a block of notebooks/results/README.md from a report's JSON (the study block; a strategies "
             "report's, with --mechanism; the long budget curve's, with --beside)")
    readme = sub.add_parser("readme", help=help_, description=help_)
    readme.add_argument("json", help="a report's JSON (e.g. notebooks/results/study_reduced.json)")
    readme.add_argument("--readme", default=str(RESULTS_README),
                        help="the file with the study block (default notebooks/results/README.md)")
    readme.add_argument("--checks", nargs="+", default=[], metavar="JSON",
                        help="fine-tuning length checks shown beside the study (e.g. notebooks/results/study_cpu_check_2x.json)")
    help_ = "rerun one cell of a committed report and compare"
    rerun = sub.add_parser("rerun", help=help_, description=help_)
    rerun.add_argument("json", help="the committed report's JSON (e.g. notebooks/results/study_cpu.json)")
    rerun.add_argument("unit", help="a fine-tuning unit, e.g. finetune/cwfid/seed_0/train_4/selective_9000")
    rerun.add_argument("--root", default="runs/rerun", help="a fresh study folder for the rerun (default runs/rerun)")
    rerun.add_argument("--threads", type=thread_count, default=1,
                       help="torch intra-op threads (at most the usable cores)")
    help_ = "measure every masking strategy's mechanism (classes hidden, gain, mask dependence)"
    mechanism.add_arguments(sub.add_parser("mechanism", help=help_, description=help_))


def study(args: argparse.Namespace) -> int:
    """``smir study <sub-command>``; ``args.command_line`` is recorded in a report."""
    if args.study_command == "mechanism":
        return mechanism.run(args)
    if args.study_command == "readme":
        print(write_readme_section(Path(args.json), Path(args.readme), [Path(p) for p in args.checks]))
        return 0
    torch.set_num_threads(args.threads)
    if args.study_command == "rerun":
        print("\n".join(rerun_lines(rerun_cell(args.json, args.unit, args.root))))
        return 0
    protocol = load_protocol(args.protocol, {"seeds": args.seeds} if args.seeds else None)
    root = Path(args.root or f"runs/study_{protocol.name}")
    timings = [Path(t) for t in args.timings] if getattr(args, "timings", None) else None
    if args.study_command == "plan":
        print("\n".join(plan_lines(protocol, timings, args.processes)))
        return 0
    if args.study_command == "run":
        index, count = parse_shard(args.shard)
        out = run_units(protocol, root, index, count, steal=not args.no_steal, wait_s=args.wait, only=args.only)
        print(f"ran {len(out['ran'])} unit(s); failed {len(out['failed'])}; "
              f"{len(out['left'])} unit(s) of the study not finished")
        for folder, error in out["failed"].items():
            print(f"FAILED {folder}: {error}")
        return 1 if out["failed"] else 0
    tic = time.perf_counter()
    summary = write_report(protocol, root, Path(args.out), args.command_line, note=args.note,
                           timings=timings, estimate_for=args.estimate_for, force=args.force,
                           mechanism=args.mechanism and Path(args.mechanism), beside=[Path(p) for p in args.beside])
    print(f"{summary['units']['done']} of {summary['units']['total']} units finished; report in "
          f"{args.out}.md ({time.perf_counter() - tic:.0f} s)")
    return 0


def add_reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``smir reproduce``."""
    parser.add_argument("--config", default="study_cpu", help="preset, packaged config or file")
    parser.add_argument("--datasets", nargs="+", default=["cwfid", "synthetic"], choices=sorted(CROSS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--run-dir", default="runs/study_cpu")
    parser.add_argument("--share-images", type=int, default=35,
                        help="training images on which the masks' share of plants is measured")
    parser.add_argument("--threads", type=thread_count, default=1,
                        help="torch intra-op threads (at most the usable cores)")
    parser.add_argument("--report", default=None, help="write <REPORT>.md and <REPORT>.json")
    parser.add_argument("--note", default=None, help="a line for the report (e.g. how the runs were split)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def reproduce(args: argparse.Namespace) -> int:
    """``smir reproduce``: each dataset's study, then (``--report``) the report of all of them."""
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
        run_dirs = {d: Path(args.run_dir) / d for d in results}
        report(results, args.command_line, time.perf_counter() - tic, Path(args.report), run_dirs, args.note)
    return 0
