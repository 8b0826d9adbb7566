#!/usr/bin/env bash
# Build the book (jupyter-book 1.x, HTML in book/_build/html):
# 1. the experiments the table of contents shows (book/runs/NAME/NAME) run into book/runs/NAME/ with
#    `cosypose-nb experiment`, once: a finished run is kept (delete its folder, or `make runs RUNS_ARGS=--force`, to run it again);
# 2. jupyter-book executes the chapters (nbs/, cached in book/_build/.jupyter_cache) and publishes them with
#    the executed notebooks of the runs (not re-run). The build fails when a chapter raises.
# Every kernel loads the display extension cosypose_nb.experiments.runner: matplotlib inline (whatever
# MPLBACKEND says; scripts and tests stay on Agg), plotly figures as HTML with plotly.js from the book's _static.
# BOOK_TOC=path/to/_toc.yml builds another table of contents (e.g. a few chapters while writing).
# Checked in a browser afterwards by `pytest tests/test_book.py` (Debian's chromium: installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg PYTHONUNBUFFERED=1
TOC=${BOOK_TOC:-book/_toc.yml}
start=$(date +%s)

# the kernels' IPython profile: load the display extension
export IPYTHONDIR="$PWD/book/_build/ipython"
mkdir -p "$IPYTHONDIR/profile_default"
echo "c.IPKernelApp.extensions = ['cosypose_nb.experiments.runner']" > "$IPYTHONDIR/profile_default/ipython_kernel_config.py"

# outputs cached before a change of the kernels' display set-up (the extension, its loading) may lack
# figures: start the cache afresh then (the HTML side, _config.yml and book/_ext, needs no re-execution)
stamp=$(cat cosypose_nb/experiments/runner.py "$IPYTHONDIR/profile_default/ipython_kernel_config.py" | sha256sum | cut -c1-16)
if [ "$(cat book/_build/.display-stamp 2>/dev/null)" != "$stamp" ]; then
  [ -d book/_build/.jupyter_cache ] && echo "book: display set-up changed, executing the chapters afresh"
  rm -rf book/_build/.jupyter_cache book/_build/jupyter_execute
  echo "$stamp" > book/_build/.display-stamp
fi

# the run folders the table of contents shows (book/runs/NAME/NAME): made when missing, finished ones kept
runs=$( (grep -o 'book/runs/[A-Za-z0-9_]*' "$TOC" || true) | cut -d/ -f3 | sort -u | tr '\n' ' ')
if [ -n "$runs" ]; then
  echo "== experiments $runs-> book/runs (finished runs are kept)"
  cosypose-nb experiment $runs --out book/runs ${RUNS_ARGS:-}
fi

echo "== chapters ($TOC)"
# a failed chapter raises (nb_execution_raise_on_error) and jupyter-book exits non-zero: set -e stops here
jupyter-book build . --config book/_config.yml --toc "$TOC" --path-output book
if ls book/_build/html/reports/*.log >/dev/null 2>&1; then
  echo "book: FAILED, execution reports in book/_build/html/reports/" >&2; exit 1
fi

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${BOOK_NO_APT:-}" ]; then
    echo "== installing Debian's chromium (for pytest tests/test_book.py)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null || echo "book: apt-get install chromium failed; tests/test_book.py will skip" >&2
  else
    echo "book: no chromium; tests/test_book.py will skip (sudo apt-get install chromium)"
  fi
fi
echo "book: built in $(( $(date +%s) - start )) s; open book/_build/html/index.html (check: pytest tests/test_book.py)"
