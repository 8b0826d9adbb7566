#!/usr/bin/env bash
# Build the book (jupyter-book 1.x): executes the chapters (cached) and the experiment notebooks under
# book/experiments/ that papermill produced, and writes HTML to book/_build/html.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg
jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book
echo "book: open book/_build/html/index.html"
