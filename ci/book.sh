#!/usr/bin/env bash
# Build the book (jupyter-book 1.x, HTML in book/_build/html):
# 1. papermill runs the parameterised experiment notebooks of book/experiments/ into book/_experiments/
#    (PAPERMILL_ARGS, e.g. "-p n_problems 5", passes parameters to all of them);
# 2. jupyter-book executes the chapters (nbs/, cached) and publishes them with the executed experiments.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg
mkdir -p book/_experiments
for nb in book/experiments/*.ipynb; do
  echo "papermill: $nb"
  papermill --cwd book/experiments ${PAPERMILL_ARGS:-} "$nb" "book/_experiments/$(basename "$nb")"
done
jupyter-book build . --config book/_config.yml --toc book/_toc.yml --path-output book
echo "book: open book/_build/html/index.html"
