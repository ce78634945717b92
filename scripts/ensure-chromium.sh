#!/usr/bin/env bash
# Make sure a headless-capable Chromium is installed, for the HTML report browser test
# (tests/skyscore/test_report.py). Idempotent: does nothing when chromium is already on PATH.
# Debian/Ubuntu-with-apt only; elsewhere it says what to do and fails.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        echo "ensure-chromium: found $(command -v "$name")"
        exit 0
    fi
done

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: chromium not found and apt-get is unavailable;" \
        "install Chromium (or Chrome) so that 'chromium' is on PATH" >&2
    exit 1
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "ensure-chromium: need root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

echo "ensure-chromium: installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
# fonts-liberation: the report's sans-serif fallback, so screenshots have legible text.
"${SUDO[@]}" apt-get install -y -q chromium fonts-liberation
command -v chromium >/dev/null 2>&1 || {
    echo "ensure-chromium: apt-get finished but 'chromium' is still not on PATH" >&2
    exit 1
}
echo "ensure-chromium: installed $(chromium --version 2>/dev/null || echo chromium)"
