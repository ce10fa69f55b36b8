"""The book (``make book``) served on 127.0.0.1 and read in headless Chromium: the ``book`` tier.

A session fixture builds the site from the newest current demo run (``book/build.py`` runs the
demo first when there is none) into the test's folder and times the build; a thread serves it
with ``http.server``. Playwright then drives Debian's Chromium (the ``ui`` tier's launch options)
and checks what a reader meets: every page loads without a console error, every request stays on
127.0.0.1, every image is decoded; notebooks 02-06 show their paper figure (the output of the
cell tagged ``paper-figure``); prev/next links walk the series in order; setup cells are
collapsed; each notebook page links its ``.ipynb``; a collapsed answer opens on click; the search
page finds "selective". Full-page screenshots of the landing page and notebook 03 go to the
test's folder (printed); with ``SMIR_BOOK_SCREENSHOTS=<folder>`` a small 256-colour copy of
notebook 03 around its paper figure is written there as ``book_03.png``
(``SMIR_BOOK_SCREENSHOTS=docs/images`` refreshes the picture of docs/book.md and the README).

The built HTML is also read without a browser: no script, style, image or font comes from
another host. Without a Chromium binary the browser tests skip and say how to install it.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import pytest
from ui_jupyterlab import CHROMIUM_INSTALL, find_chromium, launch_browser, save_palette_png

from book.build import ROOT, build, find_run, run_demo

pytestmark = pytest.mark.book

SERIES = [p.stem for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
PAPER_FIGURES = ["02_reconstruction", "03_patch_loss_maps", "04_selective_masks", "05_partitioned_pretraining",
                 "06_segmentation_evaluation"]
BUILD_BUDGET_S = 60.0        # staging and Sphinx, after the demo, on 2 CPU cores
LOCAL_SCHEMES = {"data", "blob", "about"}
README_PICTURE_MAX = 300_000  # bytes
# Resolves when every <img> of the page is decoded; lists the ones that failed or stayed empty.
BROKEN_IMAGES_JS = """async () => {
  const images = [...document.images];
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return images.filter(img => !img.complete || img.naturalWidth === 0).map(img => img.currentSrc || img.src);
}"""


@dataclass
class Site:
    html: Path
    seconds: float
    url: str = ""


@dataclass
class Visit:
    """One page opened in a fresh tab, with everything it asked for and complained about."""

    page: object
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        return [u for u in self.requests
                if urlparse(u).scheme not in LOCAL_SCHEMES and urlparse(u).hostname != "127.0.0.1"]


def pages(site: Site) -> list[Path]:
    """The site's HTML pages (the themes also copy HTML template fragments into _static/)."""
    return sorted(p for p in site.html.rglob("*.html") if p.relative_to(site.html).parts[0] != "_static")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Iterator[Site]:
    """The book built from the newest current demo run, served on 127.0.0.1 for the session."""
    runs = ROOT / "runs"
    run = find_run(runs, sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))) or run_demo(runs)
    start = time.perf_counter()
    html = build(tmp_path_factory.mktemp("book"), run)
    built = Site(html, time.perf_counter() - start)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    built.url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield built
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[object]:
    """A headless Chromium context (1280x900); each check opens its own tab."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip(f"no Chromium for the book tests; install it with: {CHROMIUM_INSTALL}")
    with launch_browser(chromium) as page:
        yield page.context


def visit(context, site: Site, path: str) -> Visit:
    """Open ``path`` of the site in a new tab, recording requests, console errors and HTTP failures."""
    page = context.new_page()
    seen = Visit(page)
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("console", lambda m: seen.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: seen.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: seen.errors.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: seen.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.goto(site.url + path, wait_until="load", timeout=60_000)
    page.wait_for_load_state("networkidle", timeout=30_000)
    return seen


def output_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "book_screenshots"


class RemoteReferences(HTMLParser):
    """Collects src/href of <script>, <link>, <img>, <source> and <iframe> that name another host."""

    TAGS = {"script", "link", "img", "source", "iframe"}

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.TAGS:
            for name, value in attrs:
                if name in ("src", "href", "srcset") and value and urlparse(value.split()[0]).netloc:
                    self.found.append(f"<{tag} {name}={value!r}>")


def test_build_time_is_within_budget(site: Site):
    print(f"book built in {site.seconds:.1f} s (after the demo), {site.html}")
    assert site.seconds <= BUILD_BUDGET_S, (
        f"the book took {site.seconds:.0f} s to stage and build, over the {BUILD_BUDGET_S:.0f} s budget")


def test_built_html_fetches_nothing_from_another_host(site: Site):
    found = pages(site)
    assert len(found) >= len(SERIES) + 2, f"only {len(found)} pages in {site.html}"
    remote = {}
    for page in found:
        parser = RemoteReferences()
        parser.feed(page.read_text(encoding="utf-8"))
        if parser.found:
            remote[str(page.relative_to(site.html))] = parser.found
    assert not remote, f"pages load from other hosts: {remote}"


def test_every_page_loads_cleanly_and_locally(site: Site, browser):
    """Console errors, requests to another host, HTTP failures and undecoded images, over all pages."""
    problems, requests = {}, 0
    for path in pages(site):
        rel = path.relative_to(site.html).as_posix()
        seen = visit(browser, site, rel)
        try:
            broken = seen.page.evaluate(BROKEN_IMAGES_JS)
            seen.page.wait_for_load_state("networkidle", timeout=30_000)
            found = seen.errors + [f"request to another host: {u}" for u in seen.foreign()] + \
                [f"image not loaded: {u}" for u in broken]
            requests += len(seen.requests)
            if found:
                problems[rel] = found
        finally:
            seen.page.close()
    print(f"{requests} requests, all on 127.0.0.1")
    assert not problems, "pages with problems:\n" + "\n".join(f"{p}: {v}" for p, v in problems.items())


@pytest.mark.parametrize("stem", PAPER_FIGURES)
def test_notebook_shows_its_paper_figure(site: Site, browser, stem: str):
    seen = visit(browser, site, f"notebooks/{stem}.html")
    try:
        figures = seen.page.locator(".tag_paper-figure .cell_output img")
        assert figures.count() >= 1, (f"notebooks/{stem}.html shows no image in a cell tagged 'paper-figure': "
                                      f"tag the code cell that draws the paper figure in notebooks/{stem}.ipynb")
        for i in range(figures.count()):
            img = figures.nth(i)
            img.scroll_into_view_if_needed()
            width, height = img.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
            assert width >= 200 and height >= 100, f"{stem}: paper figure {i} is {width}x{height} px"
            assert img.is_visible(), f"{stem}: paper figure {i} is not visible"
    finally:
        seen.page.close()


def test_prev_next_walk_the_series_in_order(site: Site, browser):
    seen = visit(browser, site, "index.html")
    page = seen.page
    try:
        listed = page.locator(".bd-article .toctree-wrapper").first.locator("a.reference.internal")
        hrefs = [listed.nth(i).get_attribute("href") for i in range(listed.count())]
        assert hrefs == [f"notebooks/{s}.html" for s in SERIES], f"the landing page lists {hrefs}"
        for stem in SERIES:  # forward from the landing page
            page.locator("a.right-next").first.click()
            page.wait_for_load_state("load")
            assert page.url.endswith(f"/notebooks/{stem}.html"), f"next led to {page.url}, expected {stem}"
        for stem in reversed(SERIES[:-1]):
            page.locator("a.left-prev").first.click()
            page.wait_for_load_state("load")
            assert page.url.endswith(f"/notebooks/{stem}.html"), f"previous led to {page.url}, expected {stem}"
        assert not seen.errors, seen.errors
    finally:
        page.close()


@pytest.mark.parametrize("stem", SERIES)
def test_setup_is_collapsed_and_the_notebook_downloads(site: Site, browser, stem: str):
    seen = visit(browser, site, f"notebooks/{stem}.html")
    page = seen.page
    try:
        setup = page.locator(".cell", has_text="setup_notebook(").first
        assert setup.count(), f"{stem}: no cell calls setup_notebook"
        assert setup.locator("details.hide").count() == 1, f"{stem}: the setup cell is not collapsible"
        assert not setup.locator("pre").first.is_visible(), f"{stem}: the setup cell's code is shown open"
        link = page.locator(f"a.download[href$='/{stem}.ipynb']")
        assert link.count() == 1, f"{stem}: no download link to {stem}.ipynb"
        response = page.request.get(link.first.evaluate("a => a.href"))
        assert response.ok, f"{stem}: the download link answers {response.status}"
        nb = response.json()
        assert nb["cells"] and not any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"
                                       and "keep_output" not in c["metadata"].get("tags", [])), \
            f"{stem}: the downloadable notebook is not the clean committed one"
        assert f"jupyter lab notebooks/{stem}.ipynb" in page.locator(".admonition").first.inner_text()
    finally:
        page.close()


def test_a_collapsed_answer_opens_on_click(site: Site, browser):
    opened = 0
    for stem in SERIES:
        seen = visit(browser, site, f"notebooks/{stem}.html")
        page = seen.page
        try:
            answers = page.locator("details", has=page.locator("summary", has_text="Answer"))
            for i in range(answers.count()):
                answer = answers.nth(i)
                body = answer.locator(":scope > :not(summary)").first
                assert answer.get_attribute("open") is None, f"{stem}: answer {i} is open before a click"
                assert not body.is_visible(), f"{stem}: answer {i}'s text shows before a click"
                answer.locator("summary").click()
                assert answer.evaluate("d => d.open"), f"{stem}: answer {i} did not open on click"
                body.wait_for(state="visible", timeout=5_000)
                opened += 1
        finally:
            page.close()
    assert opened >= 1, "no <details><summary>Answer</summary> block in any notebook of the series"


def test_search_finds_selective(site: Site, browser):
    seen = visit(browser, site, "search.html?q=selective")
    page = seen.page
    try:
        results = page.locator("ul.search li")
        results.first.wait_for(timeout=30_000)
        hrefs = [results.nth(i).locator("a").first.get_attribute("href") for i in range(results.count())]
        assert any("notebooks/04_selective_masks" in h for h in hrefs), f"search for 'selective' found {hrefs}"
        assert not seen.errors and not seen.foreign(), (seen.errors, seen.foreign())
    finally:
        page.close()


def test_screenshots(site: Site, browser, tmp_path_factory):
    """Full-page pictures of the landing page and notebook 03 (answer collapsed), and the small copy."""
    folder = output_folder(tmp_path_factory)
    folder.mkdir(parents=True, exist_ok=True)
    shots = {}
    for name, path in [("landing", "index.html"), ("03_patch_loss_maps", "notebooks/03_patch_loss_maps.html")]:
        seen = visit(browser, site, path)
        try:
            assert not seen.page.evaluate(BROKEN_IMAGES_JS)
            shots[name] = folder / f"book_{name}_full.png"
            seen.page.screenshot(path=shots[name], full_page=True)
            if name.startswith("03"):  # the README's picture: the section of the paper figure
                seen.page.set_viewport_size({"width": 1280, "height": 1100})
                seen.page.locator(".tag_paper-figure").first.evaluate(
                    "cell => { const h = cell.closest('section').querySelector('h2');"
                    " window.scrollTo(0, h.getBoundingClientRect().top + window.scrollY - 70); }")
                shots["readme"] = folder / "book_03.png"
                seen.page.screenshot(path=shots["readme"])
        finally:
            seen.page.close()
    for shot in shots.values():
        assert shot.stat().st_size > 10_000, f"{shot} is almost empty"
    print("screenshots: " + ", ".join(str(p) for p in shots.values()))
    target = os.environ.get("SMIR_BOOK_SCREENSHOTS")
    if target:
        small = save_palette_png(shots["readme"], Path(target) / "book_03.png")
        assert small.stat().st_size < README_PICTURE_MAX, f"{small} is {small.stat().st_size} bytes"
