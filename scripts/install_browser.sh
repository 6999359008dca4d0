#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (pytest -m browser).
#
# Playwright drives this system browser (executable_path=/usr/bin/chromium); its own
# browser download (`playwright install`) is not used. Idempotent: does nothing when
# Chromium is already installed. Needs root (CI runs it before the tests).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "[browser] $("$CHROMIUM" --version 2>/dev/null || echo chromium) already installed at $CHROMIUM"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "[browser] installing Debian's chromium"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
echo "[browser] installed: $("$CHROMIUM" --version 2>/dev/null)"
