"""The documentation holds together: every relative link of the README, docs/, the results page
and the benchmark results resolves (to a file of the repository, and an ``#anchor`` to a heading
of the Markdown page it names), the README stays a landing page of at most 200 lines, and its
findings quote only numbers that the committed reports they link to state."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import mistune
import pytest

from smir_lib.study.tables import README_BEGIN, README_END, RESULTS_README, write_readme_section

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "notebooks" / "results" / "README.md",
         ROOT / "benchmarks" / "RESULTS.md"]
README_MAX_LINES = 200
FINDINGS = "## What the kit found"
MAX_FINDINGS = 5

_parse = mistune.create_markdown(renderer=None, plugins=["table"])  # tables: links in their cells count


def _walk(tokens: list[dict]) -> Iterator[dict]:
    for token in tokens:
        yield token
        if isinstance(token.get("children"), list):
            yield from _walk(token["children"])


def _text(token: dict) -> str:
    """The plain text of a heading or paragraph (code spans keep their text, as GitHub's do)."""
    if "children" not in token:
        return token.get("raw", "")
    return "".join(_text(child) for child in token["children"])


def link_targets(markdown: str) -> list[str]:
    """Every link and image address in ``markdown``; code spans and code blocks hold none."""
    return [t["attrs"]["url"] for t in _walk(_parse(markdown)) if t["type"] in ("link", "image")]


def heading_anchors(markdown: str) -> set[str]:
    """The ``#anchors`` GitHub gives the headings of ``markdown``: lower case, punctuation dropped,
    spaces to hyphens, ``-1``, ``-2`` ... after a repeated one."""
    anchors: set[str] = set()
    for token in _walk(_parse(markdown)):
        if token["type"] == "heading":
            slug = re.sub(r"[^\w\- ]", "", _text(token).strip().lower()).replace(" ", "-")
            n, candidate = 0, slug
            while candidate in anchors:
                n += 1
                candidate = f"{slug}-{n}"
            anchors.add(candidate)
    return anchors


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of ``page`` that do not resolve, each with the reason: a file missing
    or outside ``root``, or an ``#anchor`` that no heading of its Markdown target has."""
    broken = []
    for url in link_targets(page.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", url, flags=re.I):  # https:, mailto: ...: not a file
            continue
        path, _, anchor = url.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.is_relative_to(root.resolve()) or not target.exists():
            broken.append(f"{url}: no file {target}")
        elif anchor and target.suffix != ".md":
            broken.append(f"{url}: anchors are checked in Markdown pages only, link the file")
        elif anchor and anchor not in heading_anchors(target.read_text()):
            broken.append(f"{url}: {target.name} has no heading with anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert page.is_file(), f"{page} is missing"
    assert link_targets(page.read_text()), f"{page} links nowhere: is the link parser reading it?"
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_the_link_check_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    """The check above can fail: a page with one good link, one to a missing file, one to a
    missing heading, and links in code that must be ignored."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, twice\n\n## A `code` heading, twice\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[good](other.md#a-code-heading-twice-1) [self](#page) [web](https://example.org/x)\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere) ![pic](pic.png)\n\n"
                    "`[in code](nowhere.md)`\n\n```\n[in a block](nowhere.md)\n```\n\n"
                    "| a | b |\n|---|---|\n| [in a table](missing_too.md) | x |\n")
    broken = broken_links(page, tmp_path)
    assert [b.split(":")[0] for b in broken] == ["missing.md", "other.md#nowhere", "pic.png", "missing_too.md"]
    assert heading_anchors((tmp_path / "other.md").read_text()) == {
        "other-page", "a-code-heading-twice", "a-code-heading-twice-1"}


def test_every_docs_page_is_listed_in_the_index():
    index = ROOT / "docs" / "index.md"
    listed = {(index.parent / url.partition("#")[0]).resolve() for url in link_targets(index.read_text())}
    unlisted = [p.name for p in (ROOT / "docs").glob("*.md") if p != index and p.resolve() not in listed]
    assert not unlisted, f"docs/index.md does not list {unlisted}: add a row for each"


def test_readme_is_a_landing_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines, at most {README_MAX_LINES}: move the details to a page of docs/")
    text = "\n".join(lines)
    for needed in ("make demo", "make test", "docs/index.md", "notebooks/results/README.md", FINDINGS):
        assert needed in text, f"README.md no longer mentions {needed!r}"


def test_nothing_in_the_library_writes_the_readme():
    """The study block lives in notebooks/results/README.md; the kit's README has none to write."""
    assert RESULTS_README == ROOT / "notebooks" / "results" / "README.md"
    assert inspect.signature(write_readme_section).parameters["readme"].default == RESULTS_README
    assert README_BEGIN in RESULTS_README.read_text()
    assert "study:begin" not in README.read_text()


def _findings() -> list[str]:
    text = README.read_text()
    start = text.index(FINDINGS)
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    return [item.strip() for item in re.split(r"^- ", section, flags=re.M)[1:]]


def test_readme_findings_are_few_and_quote_only_their_reports():
    """At most five findings of one sentence each, and every decimal number a finding quotes
    (0.437, 2.9 ...) is written in a committed report that the same finding links to."""
    findings = _findings()
    assert 0 < len(findings) <= MAX_FINDINGS, f"README: {len(findings)} findings, at most {MAX_FINDINGS}"
    for finding in findings:
        prose = re.sub(r"\]\([^)]*\)", "]", " ".join(finding.split()))  # addresses are not sentences
        sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", prose)
        assert len(sentences) == 1, f"README finding of {len(sentences)} sentences, one each: {finding[:80]}"
        reports = [(README.parent / url.partition("#")[0]) for url in link_targets(finding)]
        assert reports, f"README finding links no report: {finding[:80]}"
        stated = "\n".join(r.read_text() for r in reports if r.is_file())
        quoted = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", prose)
        unknown = [q for q in quoted if not re.search(rf"(?<![\w.]){re.escape(q)}(?![\w])", stated)]
        assert not unknown, f"README finding quotes {unknown}, which its reports do not state: {finding[:80]}"


def test_results_page_text_quotes_results_only_as_the_reports_write_them():
    """Around its generated block, notebooks/results/README.md quotes results with 3 or more
    decimals (0.437, +0.012) only as a committed report beside it writes them (the reproduction's
    .md, the studies' .md and .json), so the hand-written text cannot drift from the runs."""
    text = RESULTS_README.read_text()
    start, end = text.index(README_BEGIN), text.index(README_END)
    prose = text[:start] + text[end:]
    stated = "\n".join(p.read_text() for p in sorted(RESULTS_README.parent.glob("*.md")) + sorted(
        RESULTS_README.parent.glob("*.json")) if p != RESULTS_README)
    quoted = re.findall(r"(?<![\w.])\d+\.\d{3,}(?![\w.])", prose)
    assert quoted, "the results page quotes no result: is the pattern reading it?"
    unknown = [q for q in quoted if not re.search(rf"(?<![\w.]){re.escape(q)}(?![\w])", stated)]
    assert not unknown, f"notebooks/results/README.md quotes {unknown}, which no committed report states"
