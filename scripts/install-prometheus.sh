#!/usr/bin/env bash
# Installs Debian's prometheus package, which provides /usr/bin/prometheus and
# /usr/bin/promtool: the metrics test scrapes a runner with them, and
# `promtool check rules|config` validates contrib/prometheus/.
# Idempotent: when both binaries are already there it only prints versions.
# The package's postinst would start a system Prometheus on :9090; a temporary
# policy-rc.d (exit 101, the standard Debian way) keeps it from starting, and
# one that started anyway is stopped afterwards, so the port stays free.
# CI runs it from .ci/run; run it by hand to enable the metrics test locally.
set -euo pipefail

PROMETHEUS=/usr/bin/prometheus
PROMTOOL=/usr/bin/promtool
POLICY_RC_D=/usr/sbin/policy-rc.d

print_versions() {
  "$PROMETHEUS" --version 2>&1 | head -n 1
  "$PROMTOOL" --version 2>&1 | head -n 1
}

if [[ -x "$PROMETHEUS" && -x "$PROMTOOL" ]]; then
  echo "Prometheus and promtool are already installed:"
  print_versions
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo)
else
  echo "FATAL: installing prometheus needs root (and sudo is not available)." >&2
  exit 1
fi

apt_get() { "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@"; }

# Forbid service starts while the package installs; put back whatever
# policy-rc.d was there before (Docker images often ship one) on exit.
policy_backup=""
restore_policy() {
  if [[ -n "$policy_backup" ]]; then
    "${as_root[@]}" mv -f "$policy_backup" "$POLICY_RC_D"
  else
    "${as_root[@]}" rm -f "$POLICY_RC_D"
  fi
}
if [[ -e "$POLICY_RC_D" ]]; then
  policy_backup=$("${as_root[@]}" mktemp "$POLICY_RC_D.bgtasks.XXXXXX")
  "${as_root[@]}" cp -p "$POLICY_RC_D" "$policy_backup"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# scripts/install-prometheus.sh: no service starts during install\nexit 101\n' |
  "${as_root[@]}" tee "$POLICY_RC_D" >/dev/null
"${as_root[@]}" chmod 755 "$POLICY_RC_D"

echo "Installing Debian's prometheus"
# apt-get update only when the package lists do not know prometheus yet, or
# when the install fails on stale lists.
if ! apt-cache policy prometheus 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  if ! apt_get update -qq; then
    echo "FATAL: apt-get update failed; cannot install Prometheus for the metrics test." >&2
    exit 1
  fi
fi
install_prometheus() { apt_get install -y -qq --no-install-recommends prometheus; }
if ! install_prometheus; then
  echo "apt-get install failed; refreshing the package lists and retrying"
  if ! apt_get update -qq || ! install_prometheus; then
    echo "FATAL: apt-get install prometheus failed; the metrics test cannot run." >&2
    exit 1
  fi
fi

# Belt and braces: if a system Prometheus got started anyway (no policy-rc.d
# support, a real systemd), stop it so it does not hold port 9090.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  "${as_root[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
if [[ -x /etc/init.d/prometheus ]]; then
  "${as_root[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi
if pgrep -x prometheus >/dev/null 2>&1; then
  # Only the daemon the package runs: its own binary as the prometheus user.
  for pid in $(pgrep -x -u prometheus prometheus 2>/dev/null || true); do
    echo "Stopping the system prometheus the package started (pid $pid)"
    "${as_root[@]}" kill "$pid" 2>/dev/null || true
  done
fi

if [[ ! -x "$PROMETHEUS" || ! -x "$PROMTOOL" ]]; then
  echo "FATAL: the package installed but $PROMETHEUS or $PROMTOOL is still missing." >&2
  exit 1
fi
echo "Installed:"
print_versions
