#!/usr/bin/env bash
# Everything the browser test (tests/test_sd_flux_lab_web.py) needs that `pip install -e .[dev]` cannot carry:
#   - Debian's chromium + chromium-driver (Playwright drives /usr/bin/chromium; never `playwright install`)
#   - the `web` extra (gradio's dependencies) and gradio==6.31.0 itself with --no-deps: gradio pins pillow<13,
#     which conflicts with the repository's pillow==13.0.0 (see pyproject.toml).
# Idempotent: installs only what is missing. Runs setup.sh first if .venv does not exist yet.
set -euo pipefail
cd "$(dirname "$0")/.."
GRADIO=gradio==6.31.0

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
chromium --version 2>/dev/null | tail -1

[ -x .venv/bin/python ] || bash setup.sh
pip_q() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
pip_q -e ".[dev,web]"
if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('gradio') != '${GRADIO#*==}')" 2>/dev/null; then
    pip_q --no-deps "$GRADIO"
fi
.venv/bin/python -c "import gradio, playwright, cv2, PIL; print('gradio', gradio.__version__, 'pillow', PIL.__version__)"
