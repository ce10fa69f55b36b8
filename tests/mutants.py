"""Break the recipe on purpose and check that the tests notice: ``make mutants``.

Each mutant is one text substitution in one source file, a deliberate mistake that a faithful
reimplementation must not make (upsampling, mask alignment, the jitter quirk, the hand-off
between steps, the mean over K, ...). For each one this script copies the repository's tracked
files into a temporary folder, applies the substitution there (the working tree is never
touched), runs only the tests that guard that part of the recipe, and reports whether they
failed (the mutant is *caught*) or passed (it *survived*). It first runs the same tests on the
unchanged copy: a test that fails anyway proves nothing.

    python tests/mutants.py            # all mutants; exit status 1 if any survived
    python tests/mutants.py --list     # names only
    python tests/mutants.py mean-to-max warm-start-removed

``tests/test_mutants.py`` checks that every substitution still applies to the current source,
so a refactor cannot silently turn a mutant into a no-op.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    why: str  # the mistake, in words
    path: str  # file, relative to the repository root
    old: str  # text that must occur exactly once in it
    new: str
    tests: tuple[str, ...]  # pytest node ids that must fail


MUTANTS: tuple[Mutant, ...] = (
    Mutant("decoder-bilinear", "decoder upsampling nearest -> bilinear", "smir_lib/models.py",
           'x = F.interpolate(x, scale_factor=2.0, mode="nearest")',
           'x = F.interpolate(x, scale_factor=2.0, mode="bilinear")',
           ("tests/test_models.py",)),
    Mutant("mask-shifted-right", "selective mask one pixel right of its image before the crop",
           "smir_lib/engine/pretrain_data.py",
           "out = self.augment(image, pixel_mask, generator=generator)",
           "out = self.augment(image, pixel_mask.roll(1, dims=-1), generator=generator)",
           ("tests/test_pretrain.py::test_selective_training_mask_follows_the_crop_and_flip",)),
    Mutant("mask-shifted-down", "selective mask one pixel below its image before the crop",
           "smir_lib/engine/pretrain_data.py",
           "out = self.augment(image, pixel_mask, generator=generator)",
           "out = self.augment(image, pixel_mask.roll(1, dims=-2), generator=generator)",
           ("tests/test_pretrain.py::test_selective_training_mask_follows_the_crop_and_flip",)),
    Mutant("jitter-quirk-noop", "shared_augmentation=False behaves like True",
           "smir_lib/engine/pretrain_data.py",
           "        if self.cfg.shared_augmentation:\n            return out[0], out[0], out[1]",
           "        if True:\n            return out[0], out[0], out[-1]",
           ("tests/test_pretrain.py::test_colour_jitter_quirk_reaches_the_input_only",
            "tests/test_pretrain.py::test_selective_training_mask_follows_the_crop_and_flip")),
    Mutant("warm-start-removed", "step k does not start from step k-1's weights",
           "smir_lib/engine/pretrain.py",
           "                load_pretrained(model, previous, reinit_head=False)\n",
           "                pass\n",
           ("tests/test_handoff.py",)),
    Mutant("scored-untrained", "partitions scored with an untrained model", "smir_lib/engine/pretrain.py",
           "        load_pretrained(scorer, previous, reinit_head=False)\n", "",
           ("tests/test_handoff.py",)),
    Mutant("handoff-swapped", "last and best checkpoints swapped in the hand-off",
           "smir_lib/engine/pretrain.py",
           '("state.pt" if cfg.handoff == "last" else "best.pt")',
           '("best.pt" if cfg.handoff == "last" else "state.pt")',
           ("tests/test_handoff.py",)),
    Mutant("val-always-random", "selective steps validate on random masks whatever val_masking says",
           "smir_lib/engine/pretrain.py",
           'selective_val = masks is not None and cfg.val_masking == "selective"',
           "selective_val = False",
           ("tests/test_handoff.py",)),
    Mutant("mean-to-max", "maximum over the K score maps instead of their mean",
           "smir_lib/selective.py",
           "scores = k_scores.mean(dim=1)", "scores = k_scores.amax(dim=1)",
           ("tests/test_selective.py",
            "tests/test_pretrain.py::test_score_partition_matches_a_naive_reference")),
    Mutant("scored-against-masked", "patches scored against the masked copy, not the original",
           "smir_lib/selective.py",
           "scores[start:stop] = patch_loss_map(recon, originals, grid, win_size=win_size)",
           "scores[start:stop] = patch_loss_map(recon, mask_images(originals, flat_masks[start:stop], "
           "grid, fill), grid, win_size=win_size)",
           ("tests/test_selective.py",
            "tests/test_pretrain.py::test_score_partition_matches_a_naive_reference")),
    Mutant("easiest-hides-hardest", "the easiest strategy hides the top half, as selective does",
           "smir_lib/selective.py",
           "return top_patch_mask(-scores, count)", "return top_patch_mask(scores, count)",
           ("tests/test_strategies.py::test_selective_hides_the_top_half_and_easiest_the_bottom_half",
            "tests/test_strategies.py::test_the_engine_scores_a_partition_with_each_strategy")),
    Mutant("unmasked-scored-masked", "selective_unmasked scores the K masked copies instead of the unmasked image",
           "smir_lib/selective.py",
           "return selective_mask(model, images, grid, random_masks=visible, **score_options).scores",
           "return selective_mask(model, images, grid, random_masks=random_masks, **score_options).scores",
           ("tests/test_strategies.py::test_selective_unmasked_scores_the_unmasked_image_in_one_pass",)),
    Mutant("cosine-off-by-one", "cosine decay reaches its floor one epoch after the last",
           "smir_lib/engine/schedule.py",
           "decay = max(epochs - 1 - warmup, 1)", "decay = max(epochs - warmup, 1)",
           ("tests/test_schedule.py",)),
    Mutant("authors-miou-skips-absent", "the authors' mIoU leaves absent classes out",
           "smir_lib/metrics.py",
           '"authors_miou": float(iou.nan_to_num(0.0).mean())',
           '"authors_miou": float(iou[present].mean())',
           ("tests/test_metrics.py",)),
)


def check_applies(mutant: Mutant, root: Path = REPO) -> str:
    """The mutated text of ``mutant.path`` under ``root``; raises if ``old`` is not there exactly once."""
    text = (root / mutant.path).read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"mutant {mutant.name!r}: its text occurs {count} times in {mutant.path} "
                         f"(expected once): update tests/mutants.py to the current source")
    return text.replace(mutant.old, mutant.new)


def copy_repo(dest: Path) -> None:
    """The tracked (and new, unignored) files of the repository, without .venv, runs, data."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)


def run_tests(root: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    """pytest on ``tests`` inside ``root`` (the copy's smir_lib first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-x", "-p", "no:cacheprovider",
                           "-o", "addopts=", "--no-header"], cwd=root, env=env, capture_output=True,
                          text=True)
    return done.returncode, done.stdout[-1500:] + done.stderr[-1500:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        print(f"unknown mutant(s) {sorted(unknown)}; known: {[m.name for m in MUTANTS]}")
        return 2
    if args.list:
        for m in chosen:
            print(f"{m.name:28s} {m.why}")
        return 0
    survived = []
    with tempfile.TemporaryDirectory(prefix="smir-mutants-") as tmp:
        root = Path(tmp) / "repo"
        copy_repo(root)
        probe = subprocess.run([sys.executable, "-c", "import smir_lib; print(smir_lib.__file__)"],
                               cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                               capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(root)):
            print(f"the copy's smir_lib is not the one imported ({probe.stdout.strip()}): cannot test mutants")
            return 2
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        code, output = run_tests(root, tests)
        if code != 0:
            print(f"the guarding tests fail on the unchanged source; fix them first:\n{output}")
            return 2
        print(f"{'mutant':28s} {'result':9s} {'seconds':>7s}  the mistake")
        for m in chosen:
            original = (root / m.path).read_text()
            (root / m.path).write_text(check_applies(m, root))
            tic = time.perf_counter()
            code, output = run_tests(root, m.tests)
            (root / m.path).write_text(original)
            caught = code == 1  # tests ran and failed (2-5: interrupted, usage or collection errors)
            print(f"{m.name:28s} {'caught' if caught else 'SURVIVED':9s} {time.perf_counter() - tic:7.1f}  {m.why}")
            if not caught:
                survived.append(m.name)
                print("    " + output.replace("\n", "\n    ")[-1200:])
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutants caught"
          + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
