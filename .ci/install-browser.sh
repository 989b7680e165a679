#!/usr/bin/env bash
# Headless Chromium for the web UI test (tests/test_sd_flux_lab_web.py): Debian's chromium (+ chromedriver).
# Idempotent: installs only what is missing. Playwright drives /usr/bin/chromium; never `playwright install`.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-browser: chromium and chromedriver already installed"
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
chromium --version
