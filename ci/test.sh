#!/usr/bin/env bash
# Every test: the notebooks' own tests (nbdev-test) and the slower ones in tests/ (pytest, which includes
# tests/test_layering.py: the parts' import order, cycles, private names; and tests/test_dependencies.py).
# Prints the counts of both; fails if either fails.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" MPLBACKEND=Agg PYTHONUNBUFFERED=1
export COSYPOSE_NB_DEVICE=${COSYPOSE_NB_DEVICE:-auto}
start=$(date +%s)
echo "== nbdev-export reproduces the committed library"
nbdev-export
if [ -n "$(git status --porcelain -- cosypose_nb 2>/dev/null)" ]; then
  echo "FAILED: cosypose_nb/ differs from what nbdev-export makes of nbs/ (edit the notebooks, then run nbdev-export):"
  git status --porcelain -- cosypose_nb
  export_rc=1
else
  export_rc=0
fi
echo "== nbdev-test (notebooks)"
# the notebooks nbdev-test runs: every nbs/**/*.ipynb but those in folders or files named _* or .* (checkpoints)
nbs=$(find nbs -name "*.ipynb" -not -path "*/.*" -not -path "*/_*" | wc -l)
nbdev-test --n-workers 2 --timing
nb_rc=$?
if [ $nb_rc -eq 0 ]; then echo "notebooks: $nbs passed, 0 failed"; else echo "notebooks: FAILED (see above)"; fi
echo "== pytest (tests/)"
python -m pytest -q tests
py_rc=$?
[ $py_rc -eq 5 ] && { echo "pytest collected no test"; py_rc=1; }
echo "== total time $(( $(date +%s) - start )) s (notebooks rc=$nb_rc, pytest rc=$py_rc, export rc=$export_rc)"
[ $nb_rc -eq 0 ] && [ $py_rc -eq 0 ] && [ $export_rc -eq 0 ]
