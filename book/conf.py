"""Sphinx configuration of the book: the executed notebooks of a demo run, the README, docs/ and
the committed study results, rendered by myst-nb with sphinx-book-theme.

``book/build.py`` stages the sources beside this file in the build folder and runs Sphinx there;
it writes ``book_run.json`` (which run the notebooks come from), read below. The site must be
self-contained: nothing here may make a page fetch a script, style or font from another host
(the ``book`` test tier records every request the browser makes).
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUN = json.loads((HERE / "book_run.json").read_text())

project = "SMIR notebooks"
author = "SMIR notebooks contributors"
copyright = "SMIR notebooks contributors (MIT licence)"
html_title = "SMIR notebooks"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "_download", "book_run.json", "**/.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # the README and the docs pages skip heading levels on purpose

# The notebooks ran with papermill in `make demo`; the book never executes them again.
nb_execution_mode = "off"
nb_merge_streams = True
# Explorers are shown as the static figures they drew with INTERACTIVE = False: no widget JS.
nb_ipywidgets_js = {}
# display(Markdown(...)) outputs hold GitHub-style tables, which plain CommonMark does not parse.
nb_render_markdown_format = "gfm"

# No dollarmath: Sphinx loads MathJax from a CDN on any page with maths (the book tier would fail).
myst_enable_extensions = ["colon_fence", "substitution"]
myst_heading_anchors = 3  # README.md#the-notebooks style links between pages resolve
myst_substitutions = {"run_name": RUN["name"], "run_date": RUN["date"], "run_profile": RUN["profile"]}

html_theme = "sphinx_book_theme"
html_theme_options = {
    "use_download_button": False,   # each notebook page links its clean .ipynb itself
    "use_fullscreen_button": False,
    "use_repository_button": False,
    "launch_buttons": {},           # no Binder, Colab or Thebe: all of them load from other hosts
    "show_toc_level": 2,
    "home_page_in_toc": True,
    "navigation_with_keys": False,
    "navbar_persistent": [],        # the sidebar has the search field; no second one in a header bar
}
html_context = {"default_mode": "light"}  # the colour mode before a reader picks one (else a console error)
html_static_path = ["_static"]
html_favicon = "_static/favicon.png"  # without one the browser asks for /favicon.ico and logs a 404
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
