#!/usr/bin/env bash
# Installs, with apt-get, what scripts/cluster/*.sh need when it is missing:
# pgbouncer, rsync, galera-4, mariadb-server, postgresql (Debian packages).
# Starts nothing and listens on no port: Debian's own pgbouncer service (port
# 6432) is kept from starting during the install and stopped/disabled after,
# since pgbouncer.sh runs its own instances on 6543/6544.
# Idempotent and quiet when everything is already installed.
set -euo pipefail

die() { echo "install.sh: ERROR: $*" >&2; exit 1; }
log() { echo "install.sh: $*" >&2; }

# package name -> a file it must provide
declare -A WANT=(
  [pgbouncer]=/usr/sbin/pgbouncer
  [rsync]=/usr/bin/rsync
  [galera-4]=/usr/lib/galera/libgalera_smm.so
  [mariadb-server]=/usr/sbin/mariadbd
  [postgresql]=/usr/lib/postgresql/15/bin/pg_ctl
)

missing=()
for pkg in pgbouncer rsync galera-4 mariadb-server postgresql; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' ||
     [[ ! -e "${WANT[$pkg]}" ]]; then
    missing+=("$pkg")
  fi
done

stop_debian_pgbouncer() {
  # Debian's service would listen on 6432; we run our own instances.
  if [[ -x /etc/init.d/pgbouncer ]]; then
    service pgbouncer stop >/dev/null 2>&1 || true
    update-rc.d pgbouncer disable >/dev/null 2>&1 || true
  fi
  if command -v systemctl >/dev/null 2>&1; then  # works offline too (symlinks)
    if [[ -d /run/systemd/system ]]; then systemctl disable --now pgbouncer.service >/dev/null 2>&1 || true
    else systemctl disable pgbouncer.service >/dev/null 2>&1 || true; fi
  fi
}

if [[ ${#missing[@]} -eq 0 ]]; then
  stop_debian_pgbouncer
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "missing packages (${missing[*]}) and not root; rerun as root (or: sudo $0)."

# Keep pgbouncer's postinst from starting the Debian service (the standard
# policy-rc.d way); restore any policy-rc.d that was there before.
POLICY=/usr/sbin/policy-rc.d
policy_backup=""
if [[ " ${missing[*]} " == *" pgbouncer "* ]]; then
  if [[ -e $POLICY ]]; then policy_backup=$(mktemp "$POLICY.bgtasks.XXXXXX"); cp -p "$POLICY" "$policy_backup"; fi
  restore_policy() { if [[ -n $policy_backup ]]; then mv -f "$policy_backup" "$POLICY"; else rm -f "$POLICY"; fi; }
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' >"$POLICY"; chmod 755 "$POLICY"
fi

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
log "installing: ${missing[*]}"
if ! apt_install; then
  log "apt-get install failed; running apt-get update and retrying"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
    die "apt-get update failed; check the network/apt sources and rerun."
  apt_install || die "apt-get install ${missing[*]} failed (see apt output above); fix it and rerun."
fi
stop_debian_pgbouncer

for pkg in "${missing[@]}"; do
  [[ -e "${WANT[$pkg]}" ]] || die "package $pkg installed but ${WANT[$pkg]} is missing; check 'dpkg -L $pkg'."
done
log "installed: ${missing[*]}"
