#!/bin/sh
# Make sure Debian's Chromium is installed at /usr/bin/chromium for the headless browser
# test of the health page (tests/test_health.py). Idempotent: does nothing when it is there.
# Playwright's own browser download is not used (it is not reachable from CI machines).
set -eu

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo present) at $CHROMIUM"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "chromium: $CHROMIUM is missing and installing it needs root (or sudo)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "chromium: installed $("$CHROMIUM" --version 2>/dev/null || echo '?') at $CHROMIUM"
