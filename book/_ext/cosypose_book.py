"""Sphinx extension of the book (jupyter-book 1.x `sphinx.local_extensions`): how the notebooks are shown.

- The exported implementation (cells starting with `#| export`) is collapsed behind a "show code" button
  (tag `hide-input`); cells holding only nbdev directives (`#| default_exp ...`) are left out (`remove-cell`).
  An experiment's `parameters` cell (its defaults) is collapsed too: the cell papermill injected after it
  shows the values the run used.
  The notebooks themselves are not changed: the tags are added to the text Sphinx reads (`source-read`).
- plotly.js is served from the book's own `_static/` (the copy inside the installed `plotly` package) and
  loaded only by the pages that draw a plotly figure, so the book works offline and from files.
- `_static/cosypose_book.css`: long code lines wrap, wide tables and outputs scroll instead of being cut off.
"""
import json
import re
import shutil
from pathlib import Path

STATIC = Path(__file__).resolve().parent.parent / "_static"
DIRECTIVE = re.compile(r"^\s*#\|\s*([\w-]+)")


def cell_tags(source: str) -> set:
    "The tags the book gives a code cell from its nbdev directives."
    lines = [l for l in source.splitlines() if l.strip()]
    directives = [m.group(1) for m in map(DIRECTIVE.match, lines) if m]
    if lines and len(directives) == len(lines):
        return {"remove-cell"}                      # only directives (default_exp ...): nothing for a reader
    if any(d in ("export", "exports") for d in directives):
        return {"hide-input"}
    if "hide" in directives:
        return {"remove-cell"}
    return set()


def tag_notebook(text: str) -> str:
    "The notebook JSON `text` with the tags of `cell_tags` added to its code cells."
    nb = json.loads(text)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell.get("source", "")
        tags = cell_tags("".join(src) if isinstance(src, list) else src)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tags |= {"hide-input"}                  # an experiment's defaults: papermill's injected cell shows the values run
        if tags:
            meta = cell.setdefault("metadata", {})
            meta["tags"] = sorted(set(meta.get("tags", [])) | tags)
    return json.dumps(nb)


def on_source_read(app, docname, source):
    if str(app.env.doc2path(docname)).endswith(".ipynb"):
        source[0] = tag_notebook(source[0])


def plotly_js() -> Path:
    import plotly
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def on_page_context(app, pagename, templatename, context, doctree):
    if "Plotly.newPlot" in context.get("body", ""):
        app.add_js_file("plotly.min.js", priority=400)


def on_builder_inited(app):
    app.config.html_static_path.append(str(STATIC))
    app.add_css_file("cosypose_book.css")


def on_build_finished(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(plotly_js(), out / "plotly.min.js")
    from importlib.metadata import version, distribution
    dist = distribution("plotly")
    lic = [f for f in (dist.files or []) if "LICENSE" in f.name.upper()]
    text = f"plotly.min.js: plotly.js as shipped in the plotly Python package {version('plotly')} (MIT licence).\n\n"
    text += "".join(f.locate().read_text() for f in lic if Path(f.locate()).is_file())
    (out / "plotly.min.js.LICENSE.txt").write_text(text)


def setup(app):
    app.connect("source-read", on_source_read)
    app.connect("builder-inited", on_builder_inited)
    app.connect("html-page-context", on_page_context)
    app.connect("build-finished", on_build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
