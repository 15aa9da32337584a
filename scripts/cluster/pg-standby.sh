#!/usr/bin/env bash
# pg-standby.sh start|stop|status|kill-primary|promote
# Starts a separate PostgreSQL 15 pair on loopback, run as user postgres:
#   primary on 127.0.0.1:${BGTASKS_PG_PRIMARY_PORT:-5441} (synchronous_standby_names='*')
#   streaming standby on 127.0.0.1:${BGTASKS_PG_STANDBY_PORT:-5442} (pg_basebackup -R)
# State (data dirs, sockets, logs) in ${BGTASKS_CLUSTER_DIR:-/tmp/bgtasks-cluster}/pg.
# `start` wipes a previous pair, waits until the standby is `sync` in the
# primary's pg_stat_replication, creates database `test`, and prints
# `export BGTASKS_TEST_PG_{PRIMARY,STANDBY,FAILOVER}_URL=...` on stdout.
# `kill-primary` = pg_ctl stop -m immediate; `promote` promotes the standby.
set -euo pipefail

ROOT=${BGTASKS_CLUSTER_DIR:-/tmp/bgtasks-cluster}
STATE=$ROOT/pg
P_PORT=${BGTASKS_PG_PRIMARY_PORT:-5441}
S_PORT=${BGTASKS_PG_STANDBY_PORT:-5442}
BIN=${BGTASKS_PG_BIN:-/usr/lib/postgresql/15/bin}
TIMEOUT=${BGTASKS_CLUSTER_TIMEOUT:-60}
APP=bgtasks_standby
if [[ $(id -u) -eq 0 ]]; then RUN_USER=postgres; else RUN_USER=$(id -un); fi

log() { echo "pg-standby.sh: $*" >&2; }
die() { echo "pg-standby.sh: ERROR: $*" >&2; exit 1; }

# Run a PostgreSQL tool as RUN_USER from / (it may not read the caller's cwd).
as_pg() { if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u "$RUN_USER" -- "$@"); else (cd / && "$@"); fi; }
wait_until() { # seconds cmd...: poll every 0.25 s
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < deadline)) || return 1; sleep 0.25; done; }
sql() { psql -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d postgres -v ON_ERROR_STOP=1 -c "$2"; }
running() { [[ -f $STATE/$1/postmaster.pid ]] && as_pg "$BIN/pg_ctl" status -D "$STATE/$1" >/dev/null 2>&1; }
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }
role() { # port -> primary|standby|down
  case $(sql "$1" "select pg_is_in_recovery()" 2>/dev/null) in f) echo primary ;; t) echo standby ;; *) echo down ;; esac; }
is_primary() { [[ $(role "$1") == primary ]]; }

stop_node() { # name: fast shutdown, immediate if that hangs
  running "$1" || return 0
  log "stopping $1"
  as_pg "$BIN/pg_ctl" stop -D "$STATE/$1" -m fast -w -t "$TIMEOUT" >&2 ||
    as_pg "$BIN/pg_ctl" stop -D "$STATE/$1" -m immediate -w -t "$TIMEOUT" >&2 ||
    die "pg_ctl stop failed for $STATE/$1; see $STATE/$1.log"
}
stop_all() { stop_node standby; stop_node primary; }

sync_ok() {
  [[ $(sql "$P_PORT" "select count(*) from pg_stat_replication
        where application_name = '$APP' and state = 'streaming' and sync_state = 'sync'") == 1 ]]
}

start() {
  [[ -x $BIN/pg_ctl ]] || die "$BIN/pg_ctl not found; run scripts/cluster/install.sh (postgresql-15)."
  stop_all
  rm -rf "$STATE"
  mkdir -p "$ROOT" "$STATE/run"
  chmod 755 "$ROOT"
  chown -R "$RUN_USER:" "$STATE"
  for port in "$P_PORT" "$S_PORT"; do
    port_busy "$port" && die "port $port is in use (ss -ltnp 'sport = :$port'); stop that server or set BGTASKS_PG_PRIMARY_PORT/BGTASKS_PG_STANDBY_PORT."
  done
  local t0=$SECONDS
  log "initdb primary"
  as_pg "$BIN/initdb" -D "$STATE/primary" -A trust -U postgres -E UTF8 --locale=C.UTF-8 -N >"$STATE/initdb.log" 2>&1 ||
    die "initdb failed; see $STATE/initdb.log"
  cat >>"$STATE/primary/postgresql.conf" <<EOF

# --- scripts/cluster/pg-standby.sh ---
listen_addresses = '127.0.0.1'
port = $P_PORT
unix_socket_directories = '$STATE/run'
fsync = on
wal_level = replica
max_wal_senders = 10
hot_standby = on
synchronous_commit = on
max_connections = 200
shared_buffers = 32MB
EOF
  grep -Eq '^host\s+replication\s+all\s+127\.0\.0\.1/32\s+trust' "$STATE/primary/pg_hba.conf" ||
    echo 'host replication all 127.0.0.1/32 trust' >>"$STATE/primary/pg_hba.conf"
  log "starting primary on 127.0.0.1:$P_PORT"
  as_pg "$BIN/pg_ctl" start -D "$STATE/primary" -l "$STATE/primary.log" -w -t "$TIMEOUT" >&2 ||
    die "primary did not start; see $STATE/primary.log"
  sql "$P_PORT" "create database test" || die "create database test on the primary failed"

  # -c fast: a spread checkpoint here would make the copy wait ~1.5 min.
  log "pg_basebackup -> standby"
  as_pg "$BIN/pg_basebackup" -d "host=127.0.0.1 port=$P_PORT user=postgres application_name=$APP" \
    -D "$STATE/standby" -R -X stream -C -S "$APP" -c fast >"$STATE/basebackup.log" 2>&1 ||
    die "pg_basebackup failed; see $STATE/basebackup.log"
  # The standby must never carry synchronous_standby_names: once promoted it
  # has no standby and every commit would wait forever.
  sed -i '/synchronous_standby_names/d' "$STATE/standby/postgresql.auto.conf" "$STATE/standby/postgresql.conf"
  grep -q "application_name=$APP" "$STATE/standby/postgresql.auto.conf" ||
    echo "primary_conninfo = 'host=127.0.0.1 port=$P_PORT user=postgres application_name=$APP'" >>"$STATE/standby/postgresql.auto.conf"
  echo "port = $S_PORT" >>"$STATE/standby/postgresql.conf"
  log "starting standby on 127.0.0.1:$S_PORT"
  as_pg "$BIN/pg_ctl" start -D "$STATE/standby" -l "$STATE/standby.log" -w -t "$TIMEOUT" >&2 ||
    die "standby did not start; see $STATE/standby.log"

  # Only now make the primary synchronous (the standby's copy never had it).
  sql "$P_PORT" "alter system set synchronous_standby_names = '*'" >/dev/null
  sql "$P_PORT" "select pg_reload_conf()" >/dev/null
  wait_until "$TIMEOUT" sync_ok ||
    die "the standby is not 'sync' in pg_stat_replication after ${TIMEOUT}s; see $STATE/standby.log and $STATE/primary.log"
  [[ $(sql "$P_PORT" "show synchronous_standby_names") == '*' ]] || die "synchronous_standby_names did not apply on the primary"
  [[ $(role "$S_PORT") == standby ]] || die "node on $S_PORT is not in recovery; see $STATE/standby.log"
  chown "$RUN_USER:" "$STATE"/*.log
  log "primary + sync standby up in $((SECONDS - t0))s"
  echo "export BGTASKS_TEST_PG_PRIMARY_URL=postgres://postgres@127.0.0.1:$P_PORT/test"
  echo "export BGTASKS_TEST_PG_STANDBY_URL=postgres://postgres@127.0.0.1:$S_PORT/test"
  echo "export BGTASKS_TEST_PG_FAILOVER_URL=postgres://postgres@127.0.0.1:$P_PORT,127.0.0.1:$S_PORT/test?target_session_attrs=read-write"
}

status() { # exit 0 if at least one node answers, 3 if both are down
  local p s
  p=$(role "$P_PORT"); s=$(role "$S_PORT")
  echo "primary node 127.0.0.1:$P_PORT: $p"
  echo "standby node 127.0.0.1:$S_PORT: $s"
  if [[ $p == primary ]]; then
    sql "$P_PORT" "select 'replication: ' || application_name || ' ' || state || ' ' || sync_state from pg_stat_replication" 2>/dev/null || true
  fi
  [[ $p != down || $s != down ]] || return 3
}

kill_primary() {
  running primary || { log "primary is not running; nothing to kill"; return 0; }
  log "killing primary on 127.0.0.1:$P_PORT (pg_ctl stop -m immediate)"
  as_pg "$BIN/pg_ctl" stop -D "$STATE/primary" -m immediate -w -t "$TIMEOUT" >&2 ||
    die "pg_ctl stop -m immediate failed; see $STATE/primary.log"
}

promote() {
  running standby || die "the standby ($STATE/standby) is not running; run '$0 start' first."
  if [[ $(role "$S_PORT") == standby ]]; then
    log "promoting standby on 127.0.0.1:$S_PORT"
    as_pg "$BIN/pg_ctl" promote -D "$STATE/standby" -w -t "$TIMEOUT" >&2 ||
      die "pg_ctl promote failed; see $STATE/standby.log"
  fi
  wait_until "$TIMEOUT" is_primary "$S_PORT" ||
    die "node on $S_PORT still in recovery ${TIMEOUT}s after promote; see $STATE/standby.log"
  log "127.0.0.1:$S_PORT is now a primary"
}

case ${1:-} in
  start) start ;;
  stop) stop_all; log "stopped" ;;
  status) status ;;
  kill-primary) kill_primary ;;
  promote) promote ;;
  *) echo "usage: $0 start|stop|status|kill-primary|promote" >&2; exit 2 ;;
esac
