"""Sentences that quote a run's numbers: templates filled from a notebook's metrics.

A notebook's prose that depends on what its run measured (a correlation, a share, which model
won) is written once as a template in ``notebooks/prose/<notebook stem>.md``, one section per
passage::

    ## mechanism
    The K = {k} maps of an image correlate at {k_map_correlation:.2f}; the top half of the
    unmasked image's map overlaps the K = {k} selection by {unmasked_overlap:.0%} (chance: 50 %).

A code cell computes the values and ends with ``ctx.say("mechanism", metrics)``, which renders
the filled section as Markdown. So a code cell computes more than it formats, the wording can
be read (and reviewed) as text, and a template that names a value the cell did not compute
fails with one line naming the section, the value and the file, instead of printing a wrong
sentence.

Formatting is Python's ``str.format`` (``{x:.3f}``, ``{share:.0%}``); words that depend on a value
(``higher`` / ``lower``) are computed in the cell like any other value.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from pathlib import Path

__all__ = ["ProseError", "read_templates", "fill", "template_fields"]

_SECTION = re.compile(r"^## +(\S+) *$", re.MULTILINE)


class ProseError(KeyError):
    """A template section or a value it names is missing."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


def read_templates(path: str | Path) -> dict[str, str]:
    """The sections of a template file: ``{name: text}``; text before the first section is ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prose templates not found: {path} (one file per notebook, "
                                "sections headed '## name')")
    text = path.read_text()
    heads = list(_SECTION.finditer(text))
    sections = {}
    for head, nxt in zip(heads, heads[1:] + [None]):
        name = head.group(1)
        if name in sections:
            raise ValueError(f"{path}: section '## {name}' appears twice")
        sections[name] = text[head.end():nxt.start() if nxt else len(text)].strip()
    return sections


def template_fields(template: str) -> set[str]:
    """The value names a template uses (``{a:.2f} and {b}`` -> ``{"a", "b"}``)."""
    return {field.split(".")[0].split("[")[0]
            for _, field, _, _ in string.Formatter().parse(template) if field}


def fill(templates: Mapping[str, str], name: str, values: Mapping, source: str | Path = "templates") -> str:
    """Section ``name`` of ``templates`` with its ``{fields}`` filled from ``values``.

    >>> fill({"gain": "selective hides {share:.0%} of weed pixels"}, "gain", {"share": 0.934})
    'selective hides 93% of weed pixels'
    """
    if name not in templates:
        raise ProseError(f"{source} has no section '## {name}' (sections: {', '.join(sorted(templates))})")
    template = templates[name]
    missing = sorted(template_fields(template) - set(values))
    if missing:
        raise ProseError(f"section '## {name}' of {source} names {', '.join(missing)}, which the cell "
                         f"did not compute (it has: {', '.join(sorted(values))})")
    return template.format_map(values)
