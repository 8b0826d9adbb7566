"""The built book, checked in a real browser: `make book`, then `pytest tests/test_book.py`.

Each page is loaded by headless Chromium (Debian's `chromium`) from its file, scripts run, and the DOM is read
back: every chapter of the table of contents is a page linked from the book's navigation; every page shows
the figures its executed notebook holds (images, and plotly figures drawn by plotly.js); no page shows a
Python traceback; every internal link leads to a file (and anchor) of the book; no page loads a script from
the network but MathJax. A few pages are also saved as screenshots in book/_build/screenshots/ for a person
to look at. Skipped, saying why, when the book is not built or chromium is missing.
BOOK_TOC=... checks a book built from another table of contents (as `make book` takes it)."""
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "book" / "_build"
HTML = BUILD / "html"
TOC = Path(os.environ.get("BOOK_TOC", ROOT / "book" / "_toc.yml"))
CHROMIUM = next((shutil.which(c) for c in ("chromium", "chromium-browser", "google-chrome") if shutil.which(c)), None)

pytestmark = [
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="no built book: run `make book` first"),
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `apt-get install chromium` (Debian), then run again"),
]


def toc_files() -> list[str]:
    "The documents of the table of contents, in order (paths without suffix, relative to the repository)."
    import yaml
    toc = yaml.safe_load(TOC.read_text())
    files = [toc["root"]]
    def walk(node):
        for part in node.get("parts", []) + node.get("chapters", []) + node.get("sections", []):
            if "file" in part: files.append(part["file"])
            walk(part)
    walk(toc)
    return files


def page_path(doc: str) -> Path:
    return HTML / f"{doc}.html"


def executed_notebook(doc: str):
    "The executed notebook a page was made from: a run folder's notebook as it is, a chapter with the outputs in the build's cache."
    source = ROOT / f"{doc}.ipynb"
    if doc.startswith("book/runs/"): return nbformat.read(source, as_version=4)
    from jupyter_cache import get_cache
    from jupyter_cache.base import CachingError
    cache = get_cache(BUILD / ".jupyter_cache")
    records = [r for r in cache.list_cache_records() if Path(r.uri).resolve() == source.resolve()]
    if records: return cache.get_cache_bundle(max(records, key=lambda r: r.created).pk).nb
    import importlib.util       # a chapter renamed since it ran: the record of its old path, found by the hash of the
    spec = importlib.util.spec_from_file_location("cosypose_book", ROOT / "book" / "_ext" / "cosypose_book.py")
    ext = importlib.util.module_from_spec(spec); spec.loader.exec_module(ext)    # notebook the build read (tagged)
    try:
        return cache.get_cache_bundle(cache.match_cache_notebook(nbformat.reads(ext.tag_notebook(source.read_text()), as_version=4)).pk).nb
    except (KeyError, CachingError):
        raise AssertionError(f"{doc}: not in the build's cache (built from another checkout?)") from None


def browse(path: Path, screenshot: Path | None = None) -> str:
    "The DOM of the page at `path` after its scripts ran (or its screenshot into `screenshot`)."
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-extensions", "--virtual-time-budget=15000", "--window-size=1280,2400"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    r = subprocess.run(args + [path.as_uri()], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.fixture(scope="module")
def doms() -> dict:
    return {doc: browse(page_path(doc)) for doc in toc_files() if page_path(doc).exists()}


# -- what the notebooks drew
PRIORITY = ["application/javascript", "text/html", "image/svg+xml", "image/png", "image/jpeg", "text/markdown",
            "text/latex", "text/plain"]      # the book's (myst-nb's html order, widgets ranked out by _config.yml)


def expected_figures(nb) -> tuple[int, int]:
    "(images, plotly figures) the outputs of an executed notebook put on its page."
    images = plots = 0
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.cell_type != "code" or tags & {"remove-cell", "remove-output"}: continue
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            mime = next((m for m in PRIORITY if m in data), None)
            if mime is None: continue
            if mime.startswith("image/"):
                images += 1
            elif mime == "text/html":
                html = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
                images += len(re.findall(r"<img\b", html))
                plots += len(re.findall(r"Plotly\.newPlot\(", html))
    return images, plots


class _Figures(HTMLParser):
    "Counts the images inside cell outputs and the plotly figures plotly.js drew (`js-plotly-plot`)."
    def __init__(self):
        super().__init__(); self.stack, self.images, self.plots = [], 0, 0
    def handle_starttag(self, tag, attrs):
        cls = (dict(attrs).get("class") or "").split()
        if tag == "div":
            self.stack.append("cell_output" in cls)
            self.plots += "js-plotly-plot" in cls
        elif tag == "img" and any(self.stack):
            self.images += 1
    def handle_endtag(self, tag):
        if tag == "div" and self.stack: self.stack.pop()


def shown_figures(dom: str) -> tuple[int, int]:
    "(images in cell outputs, plotly figures drawn) of a page's DOM."
    f = _Figures(); f.feed(dom)
    return f.images, f.plots


# -- the tests
def test_every_chapter_is_in_the_book(doms):
    docs = toc_files()
    missing = [d for d in docs if not page_path(d).exists()]
    assert not missing, f"chapters of {TOC.name} without a page: {missing}"
    nav = doms[docs[0]]
    root_dir = page_path(docs[0]).parent
    linked = {(root_dir / unquote(urlsplit(h).path)).resolve() for h in re.findall(r'<a class="reference internal" href="([^"#]*)', nav) if h}
    linked.add(page_path(docs[0]).resolve())
    assert not [d for d in docs if page_path(d).resolve() not in linked], "chapters missing from the navigation"


def test_figures_appear(doms):
    wrong = {}
    for doc, dom in doms.items():
        want, got = expected_figures(executed_notebook(doc)), shown_figures(dom)
        if want != got: wrong[doc] = f"notebook (images, plotly) {want}, page {got}"
    assert not wrong, wrong
    assert sum(shown_figures(d)[0] for d in doms.values()) > 0, "no figure in the whole book"


def test_no_traceback(doms):
    bad = [doc for doc, dom in doms.items() if "Traceback (most recent call last)" in dom or 'class="output traceback' in dom]
    assert not bad, f"pages showing a Python traceback: {bad}"


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(); self.refs, self.ids = [], set()
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.add(a["id"])
        if tag == "a" and "name" in a: self.ids.add(a["name"])
        for key in ("href", "src"):
            if a.get(key) and tag in ("a", "link", "script", "img"): self.refs.append((tag, a[key]))


def _parse(path: Path) -> _Links:
    p = _Links(); p.feed(path.read_text(encoding="utf-8")); return p


def test_internal_links():
    parsed, broken, external = {}, [], []
    pages = [page_path(d) for d in toc_files() if page_path(d).exists()]
    for page in pages:
        for tag, ref in _parse(page).refs:
            u = urlsplit(ref)
            if u.scheme in ("http", "https"):
                if tag == "script" and "mathjax" not in ref.lower(): external.append(f"{page.name}: {ref}")
                continue
            if u.scheme in ("mailto", "data", "javascript") or ref.startswith("{{"): continue
            target = (page.parent / unquote(u.path)).resolve() if u.path else page.resolve()
            if not target.exists():
                broken.append(f"{page.relative_to(HTML)}: {ref}"); continue
            if u.fragment and target.suffix == ".html":
                ids = parsed.setdefault(target, _parse(target).ids)
                if unquote(u.fragment) not in ids: broken.append(f"{page.relative_to(HTML)}: {ref} (no such anchor)")
    assert not broken, broken[:20]
    assert not external, f"scripts from the network: {external[:10]}"


def test_plotly_served_by_the_book(doms):
    "plotly.js comes from the book's _static (the copy of the installed plotly package), on the pages with plotly figures."
    import plotly
    static = HTML / "_static" / "plotly.min.js"
    assert static.exists() and static.read_bytes() == (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    for doc, dom in doms.items():
        if shown_figures(dom)[1]:
            assert "_static/plotly.min.js" in page_path(doc).read_text()


def test_screenshots():
    "Screenshots of a few pages for a person to look at (book/_build/screenshots/); each holds more than a blank page."
    out = BUILD / "screenshots"
    out.mkdir(exist_ok=True)
    docs = toc_files()
    chosen = [d for d in docs if any(k in d for k in ("70_figures", "71_explorer", "80_demo", "runs/"))] or docs[:3]
    from PIL import Image
    import numpy as np
    for doc in chosen:
        shot = out / (doc.replace("/", "__") + ".png")
        browse(page_path(doc), screenshot=shot)
        im = np.asarray(Image.open(shot).convert("L"), dtype=float)
        assert im.std() > 10, f"{shot}: looks blank"


def test_runs_not_run_again():
    "The pages of the experiments show their run folders' executed notebooks as they are (the build does not execute them)."
    runs = [d for d in toc_files() if d.startswith("book/runs/")]
    if not runs: pytest.skip("no run folder in the table of contents")
    def texts(path):
        nb = nbformat.read(path, as_version=4)
        return [json.dumps(o.get("data", o.get("text")), sort_keys=True) for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    for doc in runs:
        copy = BUILD / "jupyter_execute" / f"{doc}.ipynb"
        assert copy.exists(), f"{doc}: not in the build"
        assert texts(copy) == texts(ROOT / f"{doc}.ipynb"), f"{doc}: the build executed it again"
