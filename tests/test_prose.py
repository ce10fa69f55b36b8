"""Computed prose: templates filled from a notebook's metrics (smir_lib.notebook.prose)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from smir_lib.notebook.prose import ProseError, fill, read_templates, template_fields

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
SAY = re.compile(r"""ctx\.say\(\s*["'](\w+)["']""")


def test_fill_formats_the_values_a_cell_computed():
    templates = {"gain": "selective hides {share:.0%} of weed pixels, random {random:.0%}"}
    assert fill(templates, "gain", {"share": 0.934, "random": 0.5}) == "selective hides 93% of weed pixels, random 50%"


def test_a_missing_value_names_the_section_the_value_and_the_file():
    with pytest.raises(ProseError, match=r"section '## gain' of nb\.md names random, which the cell did not compute"):
        fill({"gain": "{share:.0%} against {random:.0%}"}, "gain", {"share": 0.9}, source="nb.md")
    with pytest.raises(ProseError, match=r"nb\.md has no section '## loss'"):
        fill({"gain": "x"}, "loss", {}, source="nb.md")


def test_templates_are_read_by_section(tmp_path):
    path = tmp_path / "03.md"
    path.write_text("Templates of 03.\n\n## mechanism\nThe maps correlate at {r:.2f}.\n\n## verdict\nDone.\n")
    assert read_templates(path) == {"mechanism": "The maps correlate at {r:.2f}.", "verdict": "Done."}
    assert template_fields("{r:.2f} and {a.b} and {c[0]}") == {"r", "a", "c"}
    path.write_text("## a\nx\n## a\ny\n")
    with pytest.raises(ValueError, match="section '## a' appears twice"):
        read_templates(path)


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")), ids=lambda p: p.stem)
def test_every_section_a_notebook_says_exists_and_every_section_is_said(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    said = {m for c in cells if c["cell_type"] == "code" for m in SAY.findall("".join(c["source"]))}
    path = ROOT / "notebooks" / "prose" / f"{notebook.stem}.md"
    sections = set(read_templates(path)) if path.is_file() else set()
    assert said <= sections, f"{notebook.name} says {sorted(said - sections)}, which {path.name} lacks"
    assert sections <= said, f"{path.name} has sections {sorted(sections - said)} that {notebook.name} never says"
