#!/usr/bin/env bash
# Installs the system packages the tests use beyond Go: Debian's chromium,
# for the web view's headless-browser test (coordinator/web TestBrowser).
# Never fails the run: without chromium that test skips, and this says so.
set -u

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  echo "ci-deps: chromium present: $(chromium --version 2>/dev/null || chromium-browser --version 2>/dev/null)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ci-deps: WARNING: no apt-get; chromium not installed, the browser test will be SKIPPED" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ci-deps: WARNING: not root and no sudo; chromium not installed, the browser test will be SKIPPED" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq >/tmp/ci-deps-apt.log 2>&1 &&
   $SUDO apt-get install -y -qq --no-install-recommends chromium >>/tmp/ci-deps-apt.log 2>&1; then
  echo "ci-deps: installed $(chromium --version 2>/dev/null)"
else
  echo "ci-deps: WARNING: apt-get install chromium failed (log: /tmp/ci-deps-apt.log); the browser test will be SKIPPED" >&2
  tail -n 5 /tmp/ci-deps-apt.log >&2 || true
fi
exit 0
