#!/usr/bin/env bash
# Everything the browser test (tests/test_sd_flux_lab_web.py) needs that `pip install -e .[dev]` cannot carry:
#   - Debian's chromium + chromium-driver (Playwright drives /usr/bin/chromium; never `playwright install`)
# Idempotent: installs only what is missing. Runs setup.sh first if .venv does not exist yet.
set -euo pipefail
cd "$(dirname "$0")/.."

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
.venv/bin/python -c "import gradio, playwright, cv2, PIL; print('gradio', gradio.__version__, 'pillow', PIL.__version__)"
