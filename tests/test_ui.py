"""The interactive explorers in a real JupyterLab, driven in headless Chromium (the ``ui`` tier).

Papermill and nbval never render widgets, so a widget that runs fine there can still be broken
where users meet it. These tests start JupyterLab (127.0.0.1, a free port, a random token), open
every notebook that has an explorer (00-06, see ``EXPLORERS``) with ``INTERACTIVE = True`` in Debian's
Chromium through Playwright, run every cell from the *Run* menu, then move a slider with the
keyboard and wait for the explorer's figure to be redrawn. They assert that no cell shows an
error, that the slider's readout moved and that the figure changed.

Screenshots (the JupyterLab window scrolled to the explorer, and the explorer's output alone,
before and after the slider moved) go to ``<run folder>/ui/``; with ``SMIR_UI_SCREENSHOTS=<folder>``
the window after the move is also copied there (as a small 256-colour PNG), e.g. ``SMIR_UI_SCREENSHOTS=notebooks/images`` refreshes the pictures of the README and docs/notebooks.md.
A small generated notebook (one slider, one plot) checks the harness itself first.

The server and the browser are shut down on every path (failures and timeouts included); the
module's teardown asserts that no process started here is still alive. The tests skip, saying
how to install it, only when no Chromium binary is found.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import pytest
from ui_jupyterlab import (
    CHROMIUM_INSTALL,
    JupyterLabServer,
    LabNotebook,
    descendants,
    describe,
    find_chromium,
    kill_pids,
    launch_browser,
    prepare_notebook,
    save_palette_png,
)

pytestmark = pytest.mark.ui

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"

# Notebook -> (slider descriptions to try, in order; README screenshot name). Every notebook with
# an explorer (an `if INTERACTIVE:` cell using smir_lib.notebook.widgets) is listed: test_every_explorer_is_driven checks.
EXPLORERS = {
    "00_data": (("image",), "00_dataset_browser.png"),
    "01_random_masking": (("ratio", "seed"), "01_mask_explorer.png"),
    "02_reconstruction": (("seed", "image"), "02_reconstruction_explorer.png"),
    "03_patch_loss_maps": (("image", "K"), "03_loss_map_browser.png"),
    "04_selective_masks": (("image", "seed"), "04_mask_comparison_explorer.png"),
    "05_partitioned_pretraining": (("image",), "05_stored_mask_browser.png"),
    "06_segmentation_evaluation": (("image",), "06_prediction_browser.png"),
}
# With the teaching models (models/<dataset>/) notebooks 02-06 load them and train nothing, so
# Run All takes seconds to a minute each on 2 CPU cores; bounded, with room for a busy machine.
RUN_ALL_TIMEOUT = 300.0   # s: every cell of one notebook, fast profile
REDRAW_TIMEOUT = 60.0     # s: one explorer redraw after the slider moved

# The harness self-test: one slider redrawing a matplotlib plot through interactive_output,
# behind the same INTERACTIVE parameter the real notebooks use.
SELF_TEST_CELLS = [
    ("markdown", "# UI harness self-test\nOne slider redraws one plot."),
    ("code", "INTERACTIVE = False"),
    ("code", "import ipywidgets as w\n"
             "import matplotlib.pyplot as plt\n"
             "from IPython.display import display\n\n"
             "def draw(n):\n"
             "    fig, ax = plt.subplots(figsize=(4, 2.5))\n"
             "    ax.plot(range(n + 1), [i * i for i in range(n + 1)], marker='o')\n"
             "    ax.set_title(f'n = {n}')\n"
             "    plt.show()\n\n"
             "if INTERACTIVE:\n"
             "    n = w.IntSlider(value=3, min=1, max=20, description='n')\n"
             "    display(n, w.interactive_output(draw, {'n': n}))"),
]


def write_self_test_notebook(path: Path) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    for kind, source in SELF_TEST_CELLS:
        cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(source)
        nb.cells.append(cell)
    nb.cells[1].metadata["tags"] = ["parameters"]
    nbformat.write(nb, path)
    return path


class LabSession:
    """One JupyterLab server and one browser shared by the tests of this module."""

    def __init__(self, server: JupyterLabServer, browser_page_factory, run_dir: Path):
        self.server, self.new_page, self.run_dir = server, browser_page_factory, run_dir
        self.screenshots = run_dir / "ui"

    def notebook(self, name: str) -> LabNotebook:
        return LabNotebook(self.new_page(), self.server, name)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        where = (f"$SMIR_CHROMIUM={os.environ['SMIR_CHROMIUM']!r} is not an executable"
                 if os.environ.get("SMIR_CHROMIUM") else "no chromium or google-chrome on PATH")
        pytest.skip(f"no Chromium for the ui tests ({where}); install it with: {CHROMIUM_INSTALL}")
    return path


@pytest.fixture(scope="module")
def lab(chromium: str, tmp_path_factory) -> Iterator[LabSession]:
    """JupyterLab serving a scratch folder with the explorer notebooks, and a headless Chromium.

    Both are stopped on teardown, whatever happened; then any process started here that is still
    alive is killed and reported as a failure.
    """
    base = tmp_path_factory.mktemp("ui")
    lab_root, run_dir, home = base / "lab", base / "run", base / "jupyter"
    lab_root.mkdir()
    prepare_notebook(write_self_test_notebook(base / "ui_self_test.ipynb"), lab_root, {"INTERACTIVE": True})
    for stem in EXPLORERS:
        source = NOTEBOOKS / f"{stem}.ipynb"
        if source.is_file():
            prepare_notebook(source, lab_root, {"INTERACTIVE": True})
    env = {"SMIR_RUN_DIR": str(run_dir), "SMIR_PROFILE": "fast"}
    before = descendants()
    try:
        with JupyterLabServer(lab_root, home, env=env) as server, launch_browser(chromium) as page:
            yield LabSession(server, page.context.new_page, run_dir)  # one tab per notebook
    finally:
        time.sleep(0.5)
        strays = descendants() - before
        stray_lines = describe(strays)
        kill_pids(strays)
    assert not stray_lines, ("processes started by the ui tests outlived them (now killed):\n"
                             + "\n".join(stray_lines))


def explore(lab: LabSession, name: str, labels: tuple[str, ...]) -> dict:
    """Open ``name``, run it, move a slider, check errors and the redraw; return screenshot paths."""
    stem = Path(name).stem
    nb = lab.notebook(name)
    shots = {}
    try:
        nb.open(timeout=90)
        elapsed = nb.run_all(timeout=RUN_ALL_TIMEOUT)
        errors = nb.errors()
        assert not errors, f"{name}: cells show errors after Run All Cells:\n" + "\n---\n".join(errors)
        slider = nb.slider(labels)
        cell = nb.widget_cell(slider)
        label = slider.locator(".widget-label").first.inner_text()
        readout_before = slider.locator(".widget-readout").first.inner_text()
        figure_before = nb.figure_sources(cell)
        assert figure_before, (f"{name}: the explorer shows no figure image after Run All Cells "
                               f"(outputs: {cell.locator('.jp-OutputArea').first.inner_text()[:500]!r})")
        output = cell.locator(".jp-Cell-outputWrapper").first
        shots["page_before"] = nb.screenshot(lab.screenshots / f"{stem}_page_before.png", scroll_to=cell)
        shots["explorer_before"] = nb.screenshot(lab.screenshots / f"{stem}_explorer_before.png", output)

        readout_after = nb.move_slider(slider)
        assert readout_after != readout_before, (
            f"{name}: slider {label!r} still reads {readout_before!r} after three ArrowRight presses")
        figure_after = nb.wait_figure_change(cell, figure_before, timeout=REDRAW_TIMEOUT)
        assert figure_after != figure_before
        shots["page_after"] = nb.screenshot(lab.screenshots / f"{stem}_page_after.png", scroll_to=cell)
        shots["explorer_after"] = nb.screenshot(lab.screenshots / f"{stem}_explorer_after.png", output)
        errors = nb.errors()
        assert not errors, f"{name}: errors after moving slider {label!r}:\n" + "\n---\n".join(errors)
        print(f"{name}: Run All {elapsed:.1f} s; slider {label!r} {readout_before} -> {readout_after}; "
              f"figure redrawn; screenshots in {lab.screenshots}")
    except BaseException:
        try:  # leave a picture of the failure beside the others
            nb.screenshot(lab.screenshots / f"{stem}_failure.png")
        except Exception:
            pass
        if nb.console:
            print(f"browser console ({name}):\n" + "\n".join(nb.console[-30:]))
        print(f"JupyterLab log tail:\n{lab.server.log_tail()}")
        raise
    finally:
        nb.page.close()
    return shots


def publish(shot: Path, name: str) -> None:
    """Copy ``shot`` to ``$SMIR_UI_SCREENSHOTS/name`` when that variable is set.

    The copy is reduced to a 256-colour palette, so the documentation's pictures stay small (< 300 KB).
    """
    folder = os.environ.get("SMIR_UI_SCREENSHOTS")
    if folder:
        save_palette_png(shot, Path(folder) / name)


@pytest.mark.timeout(180)
def test_harness_self_test_slider_redraws_plot(lab: LabSession):
    shots = explore(lab, "ui_self_test.ipynb", ("n",))
    assert all(p.is_file() and p.stat().st_size > 0 for p in shots.values())


@pytest.mark.timeout(420)
@pytest.mark.parametrize("stem", list(EXPLORERS))
def test_explorer_redraws_in_jupyterlab(lab: LabSession, stem: str):
    labels, readme_name = EXPLORERS[stem]
    if not (NOTEBOOKS / f"{stem}.ipynb").is_file():
        pytest.fail(f"notebooks/{stem}.ipynb is missing: the ui tier tests its explorer")
    shots = explore(lab, f"{stem}.ipynb", labels)
    assert all(p.is_file() and p.stat().st_size > 0 for p in shots.values())
    publish(shots["page_after"], readme_name)


def test_every_explorer_is_driven():
    """A notebook whose INTERACTIVE switches on a widget is in EXPLORERS (no explorer left untested)."""
    import json

    with_explorer = set()
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        if any("INTERACTIVE" in src and "widgets." in src for src in code):
            with_explorer.add(path.stem)
    assert with_explorer == set(EXPLORERS), f"explorers not driven: {with_explorer - set(EXPLORERS)}"
