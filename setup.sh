#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install the repository with its pinned stack. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# pip's "Location ... is ignored" lines come from optional local mirrors; they are noise, not errors.
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, torchvision, diffusers, transformers, shared, projects" \
  || { echo "setup.sh: the environment is incomplete; see the pip output above" >&2; exit 1; }
