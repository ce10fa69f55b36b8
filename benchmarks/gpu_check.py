"""``make gpu-check``: one prepared check of a machine with an NVIDIA GPU, in at most 8 minutes.

Writes ``benchmarks/results/gpu_check.json`` and ``gpu_check.md``. Every part runs in its own
``try`` and records ``ok``, ``failed`` (with the error) or ``skipped`` (no time left), so one
broken part never hides the others; parts start only while the time budget (default 450 s)
lasts, and subprocesses are killed at their own limits:

1. ``environment``: torch, CUDA, GPU name and memory;
2. ``unit tier``: ``pytest -m unit`` on this machine, where ``device=auto`` runs the engine's
   tests on CUDA;
3. ``amp and channels_last``: a training step of the paper model (ResNet-34 U-Net, 256 px) in
   fp32, bf16 and fp16 autocast, with and without channels-last: images/s, the loss against
   fp32's on the same batch;
4. ``nccl``: ``torchrun --nproc_per_node 1 -m smir_lib pretrain`` (a process group of one on
   NCCL, DistributedDataParallel, the collectives) on the fast preset;
5. ``paper model throughput``: selective-mask generation and training images/s of the paper
   model at 256 px under bf16 autocast (``benchmarks/scoring.py`` and ``training_step.py``), with
   peak CUDA memory of each;
6. ``cwfid pretraining``: a short paper-preset selective pretraining on CWFID (2 partitions, 2
   epochs each; random 256-px crops of the frames through the engine's pipeline).

``python -m benchmarks.gpu_check [--budget-s 450] [--out-dir benchmarks/results]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


class Budget:
    """Seconds left of the whole check; a part starts only with ``need`` seconds left."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def _part(name: str, fn: Callable[[float], dict], budget: Budget, need: float, parts: dict) -> None:
    """Run one part with its time limit, recording its figures or its failure."""
    left = budget.left()
    if left < need:
        parts[name] = {"status": "skipped", "reason": f"{left:.0f} s left, the part needs {need:.0f} s"}
        return
    start = time.monotonic()
    try:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        parts[name] = {"status": "ok", **fn(left)}
    except Exception as err:  # record and go on: the other parts still tell something
        parts[name] = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000],
                       "traceback": traceback.format_exc()[-3000:]}
    parts[name]["seconds"] = round(time.monotonic() - start, 1)
    print(f"[gpu-check] {name}: {parts[name]['status']} in {parts[name]['seconds']} s", flush=True)


def _subprocess(cmd: list[str], limit: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=limit,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _data_env(data_dir: str | None) -> dict:
    """``SMIR_DATA_DIR`` for CWFID: the argument, the environment, or ``../shared/data``."""
    if data_dir:
        return {"SMIR_DATA_DIR": data_dir}
    if os.environ.get("SMIR_DATA_DIR"):
        return {}
    shared = REPO.parent / "shared" / "data"
    return {"SMIR_DATA_DIR": str(shared)} if (shared / "cwfid").is_dir() else {}


def environment(_: float) -> dict:
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA GPU: run make gpu-check on a machine with an NVIDIA GPU")
    props = torch.cuda.get_device_properties(0)
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "nccl_available": torch.distributed.is_nccl_available()}


def unit_tier(left: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "unit.xml"
        done = _subprocess([sys.executable, "-m", "pytest", "-m", "unit", "-q", "-p", "no:cacheprovider",
                            f"--junitxml={report}"], limit=min(200.0, left - 5))
        counts = {}
        if report.is_file():
            import xml.etree.ElementTree as ET

            suite = ET.parse(report).getroot()
            suite = suite if suite.tag == "testsuite" else suite[0]
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    if done.returncode != 0:
        raise RuntimeError(f"pytest -m unit exited {done.returncode} ({counts}): {done.stdout[-1500:]}")
    return counts


def amp_and_channels_last(_: float) -> dict:
    from smir_lib.losses import reconstruction_loss
    from smir_lib.models import build_unet

    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    batch, size = 16, 256
    inputs = torch.randn(batch, 3, size, size, generator=gen).to(device)
    targets = torch.randn(batch, 3, size, size, generator=gen).to(device)
    out = {}
    first_loss = None
    for amp in ("off", "bf16", "fp16"):
        for channels_last in (False, True):
            torch.manual_seed(0)
            model = build_unet("resnet34").to(device)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)
            x = inputs.contiguous(memory_format=fmt)
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
            scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
            times, loss = [], None
            for i in range(6):
                torch.cuda.synchronize()
                start = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                    pred = model(x)
                loss = reconstruction_loss(pred, targets)
                if i == 0:
                    step_loss = float(loss)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            first_loss = first_loss if first_loss is not None else step_loss
            key = f"amp={amp}, channels_last={channels_last}"
            out[key] = {"images_per_s": round(batch / sorted(times[2:])[len(times[2:]) // 2], 1),
                        "first_loss": round(step_loss, 5),
                        "first_loss_vs_fp32": round(abs(step_loss - first_loss) / first_loss, 5),
                        "finite": bool(torch.isfinite(loss))}
    return {"batch": batch, "size": size, "steps": out}


def nccl(left: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
               "-m", "smir_lib", "pretrain", "--method", "selective", "--config", "fast", "--out",
               str(Path(tmp) / "ddp"), "--quiet", "device=cuda", "pretrain_epochs=2", "pool_size=48"]
        done = _subprocess(cmd, limit=min(120.0, left - 5))
        if done.returncode != 0:
            raise RuntimeError(f"torchrun exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]}")
        result = json.loads((Path(tmp) / "ddp" / "result.json").read_text())
    return {"command": " ".join(cmd[1:]), "steps": len(result["steps"]),
            "best_val_loss": result["steps"][-1]["best_val_loss"]}


def paper_model_throughput(_: float) -> dict:
    from .scoring import bench_selective_mask
    from .training_step import bench_training_step

    device = torch.device("cuda")
    out = {}
    torch.cuda.reset_peak_memory_stats()
    scoring = bench_selective_mask(preset="resnet34", images=16, k=5, size=256, amp=True,
                                   device=device, warmup=1, repeats=3)
    out["scoring images/s"] = round(scoring.values["selected images/s"], 1)
    out["scoring / forward floor"] = round(scoring.ratios["selective / floor"], 3)
    out["scoring peak CUDA memory GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    torch.cuda.reset_peak_memory_stats()
    training = bench_training_step(preset="resnet34", batch=32, size=256, amp=True, device=device,
                                   inline_augment=False, warmup=1, repeats=3)
    out["training images/s (full step, bf16)"] = round(training.values["training images/s (full step)"], 1)
    out["training peak CUDA memory GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def cwfid_pretraining(left: float, data_dir: str | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "smir_lib", "pretrain", "--method", "selective", "--config",
               "paper", "--out", str(Path(tmp) / "cwfid"), "--quiet", "dataset=cwfid",
               "partitions=2", "pretrain_epochs=2", "pretrain_batch=16", "warmup_epochs=1",
               "device=cuda"]
        start = time.monotonic()
        done = _subprocess(cmd, limit=min(180.0, left - 5), env=_data_env(data_dir))
        if done.returncode != 0:
            raise RuntimeError(f"pretraining exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]}")
        run = Path(tmp) / "cwfid"
        history = json.loads((run / "history.json").read_text())
    return {"command": " ".join(cmd[1:]), "seconds": round(time.monotonic() - start, 1),
            "epochs": len(history), "images_per_s": [round(r["images_per_s"], 1) for r in history],
            "val_loss": [round(r["val_loss"], 4) for r in history]}


def to_markdown(report: dict) -> str:
    lines = [f"GPU check of {report['date_utc']} ({report['total_seconds']:.0f} s of a "
             f"{report['budget_s']:.0f} s budget)", "", "| part | status | s | figures |",
             "|---|---|---:|---|"]
    for name, part in report["parts"].items():
        figures = {k: v for k, v in part.items() if k not in ("status", "seconds", "traceback")}
        text = json.dumps(figures, default=str).replace("|", "\\|")
        lines.append(f"| {name} | {part['status']} | {part.get('seconds', '')} | {text[:1500]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop starting parts after this")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--data-dir", default=None, help="folder holding cwfid/ (default $SMIR_DATA_DIR or ../shared/data)")
    args = parser.parse_args(argv)
    budget, start, parts = Budget(args.budget_s), time.monotonic(), {}
    _part("environment", environment, budget, 1, parts)
    if parts["environment"]["status"] != "ok":  # a CPU machine: keep the committed results
        print(f"[gpu-check] {parts['environment']['error']}; nothing written", file=sys.stderr)
        return 2
    _part("amp and channels_last", amp_and_channels_last, budget, 30, parts)
    _part("paper model throughput", paper_model_throughput, budget, 40, parts)
    _part("nccl", nccl, budget, 40, parts)
    _part("cwfid pretraining", lambda left: cwfid_pretraining(left, args.data_dir), budget, 60, parts)
    _part("unit tier", unit_tier, budget, 60, parts)
    report = {"date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budget_s": args.budget_s,
              "total_seconds": round(time.monotonic() - start, 1), "parts": parts}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out_dir / "gpu_check.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0 if all(p["status"] == "ok" for p in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
