#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver, which the integration test
# binary's browser test (tests/integration/browser.rs) drives over WebDriver.
# Idempotent: when both binaries are already there it only prints versions.
# CI runs it from .ci/run; run it by hand to enable the browser test locally.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

print_versions() {
  "$CHROMIUM" --version
  "$CHROMEDRIVER" --version
}

if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
  echo "Chromium and ChromeDriver are already installed:"
  print_versions
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "FATAL: installing chromium and chromium-driver needs root (and sudo is not available)." >&2
  exit 1
fi

echo "Installing Debian's chromium and chromium-driver"
if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update; then
  echo "FATAL: apt-get update failed; cannot install Chromium for the browser test." >&2
  exit 1
fi
if ! "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y --no-install-recommends chromium chromium-driver; then
  echo "FATAL: apt-get install chromium chromium-driver failed; the browser test cannot run." >&2
  exit 1
fi

if [[ ! -x "$CHROMIUM" || ! -x "$CHROMEDRIVER" ]]; then
  echo "FATAL: the packages installed but $CHROMIUM or $CHROMEDRIVER is still missing." >&2
  exit 1
fi
echo "Installed:"
print_versions
