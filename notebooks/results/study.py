"""The budget study (issue 15) from the command line: plan it, run it in shards, report it.

A thin command line over the library (``smir_lib.study.plan``, ``study_run``, ``study_tables``)::

    export OMP_NUM_THREADS=1 SMIR_DATA_DIR=/path/to/data      # the folder holding cwfid/
    python notebooks/results/study.py plan --protocol cpu --timings runs/study_reduced
    python notebooks/results/study.py run --protocol cpu --root runs/study_cpu --shard 0/2 &
    python notebooks/results/study.py run --protocol cpu --root runs/study_cpu --shard 1/2 &
    wait
    python notebooks/results/study.py report --protocol cpu --root runs/study_cpu \\
        --out notebooks/results/study_cpu --timings runs/study_cpu
    python notebooks/results/study.py readme notebooks/results/study_cpu.json \\
        --checks notebooks/results/study_cpu_check_2x.json notebooks/results/study_cpu_check_35.json

``run`` resumes: start it again (same command) after a kill or in a new session and it
continues where the units stopped; any number of processes may run at once (each takes its
share first, then helps with the rest). ``report`` collects whatever has finished and lists what
is missing. ``readme`` rewrites the study block of notebooks/results/README.md from the report's JSON. ``rerun``
runs one cell of a committed report again in a fresh folder and prints it beside the committed
numbers (``run --only PATTERN`` runs any subset of the units)::

    python notebooks/results/study.py rerun notebooks/results/study_cpu.json \\
        finetune/cwfid/seed_0/train_4/selective_9000

One torch thread per process: on busy shared cores more threads per process ran slower.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"plan": "list a protocol's units (and, with --timings, its image-steps and time)",
             "run": "run or resume a protocol's units (any number of processes share them)",
             "report": "collect the finished units into <OUT>.md, .json and figures"}
    for name in ("plan", "run", "report"):
        p = sub.add_parser(name, help=helps[name])
        p.add_argument("--protocol", default="cpu", help="packaged protocol (toy, reduced, cpu, gpu) or a YAML file")
        p.add_argument("--seeds", nargs="+", type=int, default=None, help="override the protocol's seeds")
        p.add_argument("--root", default=None, help="study folder (default runs/study_<protocol>)")
        p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    sub.choices["plan"].add_argument("--timings", nargs="+", default=None,
                                     help="study roots whose units.jsonl give measured seconds per unit")
    sub.choices["plan"].add_argument("--processes", type=int, default=2, help="processes the time estimate assumes (default 2)")
    run = sub.choices["run"]
    run.add_argument("--shard", default="0/1", help="i/n: this process is i of n (0-based)")
    run.add_argument("--no-steal", action="store_true", help="run only this shard's units (and their pretraining)")
    run.add_argument("--wait", type=float, default=3600.0, help="seconds to wait for units other processes hold")
    rep = sub.choices["report"]
    rep.add_argument("--out", required=True, help="write <OUT>.md, <OUT>.json and <OUT>_*.png")
    rep.add_argument("--note", default=None, help="a line for the report (how the runs were split, the machine)")
    rep.add_argument("--timings", nargs="+", default=None, help="study roots whose units.jsonl estimate a protocol's time")
    rep.add_argument("--estimate-for", default="cpu", help="the protocol --timings estimates (default cpu)")
    rep.add_argument("--force", action="store_true", help="replace a report of more finished units than --root has")
    run.add_argument("--only", nargs="+", default=None, metavar="PATTERN",
                     help="run only the units whose folder matches (shell patterns, e.g. 'finetune/cwfid/*/train_4/*')")
    rerun = sub.add_parser("rerun", help="rerun one cell of a committed report and compare")
    rerun.add_argument("json", help="the committed report's JSON (e.g. notebooks/results/study_cpu.json)")
    rerun.add_argument("unit", help="a fine-tuning unit, e.g. finetune/cwfid/seed_0/train_4/selective_9000")
    rerun.add_argument("--root", default="runs/rerun", help="a fresh study folder for the rerun (default runs/rerun)")
    rerun.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    readme = sub.add_parser("readme", help="rewrite the study block of notebooks/results/README.md from a report's JSON")
    readme.add_argument("json", help="a report's JSON (e.g. notebooks/results/study_reduced.json)")
    readme.add_argument("--readme", default=None,
                        help="the file with the study block (default notebooks/results/README.md; its links are relative to that folder)")
    readme.add_argument("--checks", nargs="+", default=[], metavar="JSON",
                        help="fine-tuning length checks shown beside the study (e.g. notebooks/results/study_cpu_check_2x.json)")
    return parser


def _command(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return "python notebooks/results/study.py " + " ".join(shlex.quote(a) for a in args)


def main(argv: list[str] | None = None) -> int:
    """A user's mistake (an unknown protocol or unit, a stale or missing run) is one line, exit 2."""
    from smir_lib.tools.cli import report_user_error, user_errors

    args = build_parser().parse_args(argv)
    try:
        return _main(args, argv)
    except user_errors() as err:
        return report_user_error(err)


def _main(args, argv: list[str] | None) -> int:
    if args.command == "readme":
        from smir_lib.study.tables import RESULTS_README, write_readme_section

        target = Path(args.readme) if args.readme else RESULTS_README
        print(write_readme_section(Path(args.json), target, [Path(p) for p in args.checks]))
        return 0
    import torch

    from smir_lib.study.plan import load_protocol, parse_shard

    torch.set_num_threads(args.threads)
    if args.command == "rerun":
        from smir_lib.study.rerun import rerun_cell, rerun_lines

        print("\n".join(rerun_lines(rerun_cell(args.json, args.unit, args.root))))
        return 0
    protocol = load_protocol(args.protocol, {"seeds": args.seeds} if args.seeds else None)
    root = Path(args.root or f"runs/study_{protocol.name}")
    if args.command == "plan":
        from smir_lib.study.tables import plan_lines

        print("\n".join(plan_lines(protocol, [Path(t) for t in args.timings] if args.timings else None, args.processes)))
        return 0
    if args.command == "run":
        from smir_lib.study.run import run_units

        index, count = parse_shard(args.shard)
        out = run_units(protocol, root, index, count, steal=not args.no_steal, wait_s=args.wait, only=args.only)
        print(f"ran {len(out['ran'])} unit(s); failed {len(out['failed'])}; "
              f"{len(out['left'])} unit(s) of the study not finished")
        for folder, error in out["failed"].items():
            print(f"FAILED {folder}: {error}")
        return 1 if out["failed"] else 0
    from smir_lib.study.tables import write_report

    tic = time.perf_counter()
    summary = write_report(protocol, root, Path(args.out), _command(argv), note=args.note,
                           timings=[Path(t) for t in args.timings] if args.timings else None,
                           estimate_for=args.estimate_for, force=args.force)
    print(f"{summary['units']['done']} of {summary['units']['total']} units finished; report in "
          f"{args.out}.md ({time.perf_counter() - tic:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
