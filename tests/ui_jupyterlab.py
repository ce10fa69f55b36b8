"""A real JupyterLab in a headless Chromium, for the ``ui`` tests (tests/test_ui.py); the ``book``
tests (tests/test_book.py) reuse its browser: :func:`find_chromium`, :func:`launch_browser` and
:func:`save_palette_png`.

Papermill and nbval never render widgets; this harness does what a user does:

1. :func:`prepare_notebook` copies a notebook into a scratch folder with ``INTERACTIVE = True``
   written into its ``parameters`` cell and a ``python3`` kernelspec in its metadata;
2. :class:`JupyterLabServer` starts ``python -m jupyter lab`` on 127.0.0.1, a free port and a
   random token, with its own config, data, settings and workspace folders (nothing from the
   user's ``~/.jupyter`` leaks in) and the kernel of this very Python (the project's venv);
3. :func:`launch_browser` starts the system's Chromium through Playwright's
   ``executable_path`` (Playwright's own browser download is never used);
4. :class:`LabNotebook` opens the notebook, runs every cell from the *Run* menu, waits for the
   kernel to go idle, moves a slider with the keyboard and waits for the figure to redraw.

Both the server and the browser are context managers, so they are shut down on every path out
of a ``with`` block, a failing assertion or a timeout included. The server runs in its own
process group and is stopped in three steps: the REST ``/api/shutdown`` (which also shuts its
kernels down), then SIGTERM and SIGKILL to the group, then any process it started that is still
alive, by pid. :func:`descendants` lets a test assert that nothing it started outlived it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_INSTALL = "sudo apt-get install chromium  (Debian/Ubuntu; .ci/run does this when it runs as root)"
# Flags that let Chromium run headless as root in a container with no network beyond localhost:
# without the background-networking ones it tries to reach Google and gets refused.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

# What a failed cell looks like in JupyterLab 4: an error output is rendered as stderr text with
# the traceback; a widget that cannot be shown says so in place of the widget.
ERROR_OUTPUT = ('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"], '
                '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
ERROR_PATTERN = re.compile(r"Traceback|\b\w*(Error|Exception)\b:|Error displaying widget")


# --------------------------------------------------------------------------- finding things

def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary: ``$SMIR_CHROMIUM``, else the first of
    :data:`CHROMIUM_NAMES` on PATH, else ``None``."""
    explicit = os.environ.get("SMIR_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int | None = None) -> set[int]:
    """Pids of every live process below ``pid`` (default: this process)."""
    import psutil

    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def describe(pids: set[int]) -> list[str]:
    """``"pid name cmdline"`` for each live pid in ``pids`` (for assertion messages)."""
    import psutil

    lines = []
    for pid in sorted(pids):
        try:
            proc = psutil.Process(pid)
            lines.append(f"{pid} {proc.name()} {' '.join(proc.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    return lines


def kill_pids(pids: set[int], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s, each still-live process in ``pids``."""
    import psutil

    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
        except psutil.NoSuchProcess:
            continue
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


# --------------------------------------------------------------------------- the notebook

def prepare_notebook(source: Path, folder: Path, parameters: dict[str, object]) -> Path:
    """Copy ``source`` into ``folder`` with ``parameters`` written into its ``parameters`` cell.

    Each ``NAME = <literal>`` line of the tagged cell whose name is in ``parameters`` gets the new
    literal (``repr``), so ``{"INTERACTIVE": True}`` turns ``INTERACTIVE = False`` into
    ``INTERACTIVE = True``. Raises ``ValueError`` naming the notebook when it has no
    ``parameters`` cell or the cell lacks one of the names. Outputs are cleared.
    """
    import nbformat

    nb = nbformat.read(source, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"{source.name} has no cell tagged 'parameters'; expected one holding "
                         f"{sorted(parameters)}: tag the notebook's parameters cell")
    cell = cells[0]
    for name, value in parameters.items():
        pattern = re.compile(rf"^(\s*{re.escape(name)}\s*(?::[^=]+)?=\s*)([^#\n]*?)(\s*(#.*)?)$", re.M)
        if not pattern.search(cell.source):
            raise ValueError(f"the parameters cell of {source.name} does not assign {name}; "
                             f"expected a line like `{name} = ...`")
        cell.source = pattern.sub(lambda m: f"{m.group(1)}{value!r}{m.group(3)}", cell.source, count=1)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    nbformat.write(nb, target)
    return target


# --------------------------------------------------------------------------- the server

def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


class JupyterLabServer:
    """``python -m jupyter lab`` serving ``root`` on 127.0.0.1, as a context manager.

    ``home`` receives the server's private Jupyter folders and its log (``jupyterlab.log``).
    ``env`` is added to the server's (and so the kernel's) environment; ``MPLBACKEND`` is removed
    so the kernel draws figures inline as it does for a user.
    """

    def __init__(self, root: Path, home: Path, env: dict[str, str] | None = None,
                 startup_timeout: float = 90.0):
        self.root, self.home = Path(root), Path(home)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._children: set[int] = set()

    # The folders and settings that make the server independent of ~/.jupyter.
    def _prepare_home(self) -> dict[str, str]:
        dirs = {name: self.home / name for name in ("config", "data", "runtime", "settings", "workspaces")}
        for folder in dirs.values():
            folder.mkdir(parents=True, exist_ok=True)
        # The kernel is this Python (the project's venv), whatever else is installed.
        _write_json(dirs["data"] / "kernels" / "python3" / "kernel.json", {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (ipykernel)", "language": "python"})
        settings = dirs["settings"]
        # No news/update toasts over the notebook; every cell kept in the DOM (no windowing).
        _write_json(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings",
                    {"fetchNews": "false", "checkForUpdates": False})
        _write_json(settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings",
                    {"windowingMode": "none"})
        env = {**os.environ, **self.extra_env,
               "JUPYTER_CONFIG_DIR": str(dirs["config"]), "JUPYTER_DATA_DIR": str(dirs["data"]),
               "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]), "JUPYTERLAB_SETTINGS_DIR": str(settings),
               "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        env.pop("MPLBACKEND", None)
        return env

    def command(self) -> list[str]:
        return [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
                f"--port={self.port}", "--ServerApp.port_retries=0",
                f"--ServerApp.root_dir={self.root}", f"--IdentityProvider.token={self.token}",
                "--ServerApp.open_browser=False", "--ServerApp.allow_remote_access=False",
                f"--LabApp.user_settings_dir={self.home / 'settings'}",
                f"--LabApp.workspaces_dir={self.home / 'workspaces'}",
                "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
                *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])]

    def start(self) -> "JupyterLabServer":
        env = self._prepare_home()
        self._log = open(self.log_path, "w")
        # A new session = a new process group, so the whole server can be signalled at once.
        self.proc = subprocess.Popen(self.command(), cwd=self.root, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.proc.returncode} while starting; "
                                   f"its log ({self.log_path}) ends with:\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status", timeout=2)
                return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        raise TimeoutError(f"JupyterLab did not answer on {self.url} within {self.startup_timeout:.0f} s; "
                           f"its log ({self.log_path}) ends with:\n{self.log_tail()}")

    def api(self, method: str, path: str, timeout: float = 10) -> dict:
        """Call the server's REST API with the token; return the decoded JSON (or ``{}``)."""
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def lab_url(self, notebook: str, workspace: str | None = None) -> str:
        """The URL that opens ``notebook``; a named ``workspace`` starts from an empty layout
        (no tabs restored from an earlier page)."""
        prefix = f"/lab/workspaces/{workspace}" if workspace else "/lab"
        return f"{self.url}{prefix}/tree/{notebook}?token={self.token}"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and everything it started (kernels included); safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self._children |= descendants(proc.pid)
            if proc.poll() is None:
                try:  # graceful: the server shuts its kernels down before exiting
                    self.api("POST", "/api/shutdown", timeout=5)
                    proc.wait(timeout=timeout)
                except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
                    pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    continue
        # Kernels run in sessions of their own, out of reach of killpg: end the ones still alive.
        kill_pids(self._children)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "JupyterLabServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- the browser

@contextmanager
def launch_browser(executable: str, viewport: tuple[int, int] = (1280, 900)) -> Iterator[object]:
    """A Playwright page in headless ``executable`` (Chromium); browser and driver closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                             headless=True, timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
            yield context.new_page()
        finally:
            browser.close()


def save_palette_png(shot: Path, target: Path) -> Path:
    """``shot`` reduced to a 256-colour palette at ``target``, so documentation pictures stay small
    (< 300 KB); returns ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(shot) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)
    return target


class LabNotebook:
    """One notebook open in JupyterLab: run it, read its errors, move a slider, take screenshots."""

    def __init__(self, page, server: JupyterLabServer, name: str):
        self.page, self.server, self.name = page, server, name
        self.console: list[str] = []
        page.on("console", lambda msg: self.console.append(f"{msg.type}: {msg.text}")
                if msg.type in ("error", "warning") else None)
        page.on("pageerror", lambda err: self.console.append(f"pageerror: {err}"))
        # Every query is scoped to the visible notebook panel, never to another open tab.
        self.panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")

    def open(self, timeout: float = 60.0) -> None:
        """Load JupyterLab on the notebook and wait for its kernel to be idle."""
        workspace = "ui-" + re.sub(r"[^A-Za-z0-9_-]", "-", Path(self.name).stem)
        self.page.goto(self.server.lab_url(self.name, workspace), timeout=timeout * 1000)
        self.panel.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=timeout * 1000)
        self.wait_idle(timeout)
        # Fold the file browser away: the notebook gets the window's width (and the screenshots).
        current = self.page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
        if current.count():
            current.first.click()

    def accept_kernel_dialog(self) -> None:
        """Accept a "Select Kernel" dialog (shown when a notebook names no kernel) if one is up."""
        dialog = self.page.locator(".jp-Dialog", has_text="Select Kernel")
        if dialog.count():
            dialog.locator(".jp-Dialog-button.jp-mod-accept").click()

    def kernel_status(self) -> str:
        """The notebook toolbar's kernel status ("idle", "busy", "starting", ...)."""
        indicator = self.panel.locator(".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator")
        if indicator.count() == 0:
            return ""
        return indicator.first.get_attribute("data-status") or ""

    def wait_idle(self, timeout: float) -> None:
        """Wait until the kernel is idle and no cell shows ``[*]`` (queued or running)."""
        deadline = time.monotonic() + timeout
        settled = 0
        while time.monotonic() < deadline:
            self.accept_kernel_dialog()
            running = self.panel.locator(".jp-InputArea-prompt", has_text="[*]").count()
            if self.kernel_status() == "idle" and running == 0:
                settled += 1
                if settled >= 3:  # idle three polls in a row, not between two cells
                    return
            else:
                settled = 0
            time.sleep(0.5)
        raise TimeoutError(f"{self.name}: kernel still '{self.kernel_status()}' after {timeout:.0f} s")

    def _started_cells(self) -> int:
        """How many code cells show an execution count or ``[*]``."""
        return self.panel.locator(".jp-CodeCell .jp-InputArea-prompt").evaluate_all(
            "ps => ps.filter(p => /\\[[\\d*]+\\]/.test(p.textContent)).length")

    def run_all(self, timeout: float, attempts: int = 3) -> float:
        """Run > Run All Cells, as a user would; wait until every cell ran. Returns the seconds taken.

        On a busy machine the first click can land before the notebook is ready and run nothing;
        the menu is then used again (at most ``attempts`` times), never once anything started.
        """
        start = time.monotonic()
        for attempt in range(attempts):
            self.page.keyboard.press("Escape")  # close any open menu
            self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not self._started_cells():
                time.sleep(0.3)
            if self._started_cells():
                break
        else:
            raise AssertionError(f"{self.name}: Run > Run All Cells started no cell ({attempts} tries); "
                                 f"kernel status '{self.kernel_status()}'")
        self.wait_idle(timeout)
        unrun = self.panel.locator(".jp-CodeCell .jp-InputArea-prompt").evaluate_all(
            "ps => ps.filter(p => !/\\[\\d+\\]/.test(p.textContent)).length")
        if unrun:
            raise AssertionError(f"{self.name}: {unrun} code cell(s) did not run (Run All stopped early?)\n"
                                 + "\n".join(self.errors()))
        return time.monotonic() - start

    def errors(self) -> list[str]:
        """Text of every output that shows an error or a traceback (widget outputs included)."""
        texts = self.panel.locator(ERROR_OUTPUT).all_inner_texts()
        widget_errors = self.panel.locator(".jp-OutputArea-output", has_text="Error displaying widget")
        texts += widget_errors.all_inner_texts()
        return [t[-2000:] for t in texts if ERROR_PATTERN.search(t)]

    def slider(self, labels: tuple[str, ...] = ()):
        """The first widget slider whose description is one of ``labels`` (else the first slider)."""
        sliders = self.panel.locator(".jupyter-widgets.widget-slider")
        try:
            sliders.first.wait_for(timeout=30_000)
        except Exception as err:  # playwright's TimeoutError
            texts = [t[:300] for t in self.panel.locator(".jp-OutputArea-output").all_inner_texts() if t.strip()]
            raise AssertionError(
                f"{self.name}: no widget slider was rendered within 30 s. Is INTERACTIVE = True reaching "
                "the explorer cell, and is jupyterlab_widgets installed in the server's environment? "
                f"Last outputs: {texts[-3:]}") from err
        for label in labels:
            # An inner locator made from the page is matched inside each slider.
            match = sliders.filter(has=self.page.locator(".widget-label",
                                                         has_text=re.compile(rf"^\s*{re.escape(label)}\b")))
            if match.count():
                return match.first
        return sliders.first

    def widget_cell(self, slider):
        """The notebook cell that holds ``slider``."""
        return slider.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), "
                              "' jp-Cell ')][1]")

    def figure_sources(self, cell) -> list[str]:
        """The ``src`` of every image in the cell's outputs (the explorer's figure)."""
        return cell.locator(".jp-OutputArea img").evaluate_all("imgs => imgs.map(i => i.src)")

    def move_slider(self, slider, presses: int = 3, key: str = "ArrowRight") -> str:
        """Focus the slider's handle and press ``key`` ``presses`` times; return the new readout."""
        handle = slider.locator(".noUi-handle").first
        handle.scroll_into_view_if_needed()
        handle.focus()
        for _ in range(presses):
            handle.press(key)
            time.sleep(0.15)
        return slider.locator(".widget-readout").first.inner_text()

    def wait_figure_change(self, cell, before: list[str], timeout: float) -> list[str]:
        """Wait until the cell shows figure(s) whose sources differ from ``before``; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.figure_sources(cell)
            if now and now != before and self.kernel_status() == "idle":
                time.sleep(0.5)  # a redraw may come in two steps (clear, then draw)
                settled = self.figure_sources(cell)
                if settled == now:
                    return now
            time.sleep(0.3)
        raise TimeoutError(f"{self.name}: the figure did not change within {timeout:.0f} s of moving the slider")

    def screenshot(self, path: Path, locator=None, *, scroll_to=None) -> Path:
        """A PNG of ``locator`` (scrolled into view) or of the whole window, first scrolled so
        that ``scroll_to`` (a locator) is at the top."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if locator is None:
            if scroll_to is not None:
                scroll_to.evaluate("el => el.scrollIntoView({block: 'start'})")
                time.sleep(0.3)
            self.page.screenshot(path=str(path))
        else:
            locator.scroll_into_view_if_needed()
            locator.screenshot(path=str(path))
        return path
