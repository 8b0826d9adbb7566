#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv and install cosypose-nb with its pinned
# dependencies. Re-runs the install only when pyproject.toml changed since the last successful one.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3; do command -v "$c" >/dev/null 2>&1 && { PY=$c; break; }; done
fi
[ -n "$PY" ] || { echo "setup: no python3 found (Python >= 3.11 is needed)" >&2; exit 1; }
VENV=${VENV:-.venv}
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.installed" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
echo "setup: installing cosypose-nb and its pinned dependencies into $VENV (first time: a few minutes)"
# (this machine's pip configuration points at local wheel folders that do not list every package: pip warns
# about each; the warnings are dropped, errors are kept)
set +e +o pipefail
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[all]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
rc=${PIPESTATUS[0]}
set -e -o pipefail
[ "$rc" -eq 0 ] || { echo "setup: pip install failed ($rc)" >&2; exit 1; }
# The kernel every notebook runs in (nbdev-test, papermill, jupyter-book) is this environment's python.
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$VENV/.installed"
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
