#!/usr/bin/env bash
# pgbouncer.sh start|stop|status
# Starts two PgBouncer 1.18 instances in front of the main PostgreSQL
# (127.0.0.1:5432, user postgres, trust), both on loopback:
#   transaction pooling on 127.0.0.1:${BGTASKS_PGBOUNCER_PORT:-6543}
#   session pooling     on 127.0.0.1:${BGTASKS_PGBOUNCER_SESSION_PORT:-6544}
# (not 6432: that is Debian's own pgbouncer service port).
# `[databases] * = ...` forwards any database name (tests make bgt_test_XXXX).
# State (ini, pid, log) lives in ${BGTASKS_CLUSTER_DIR:-/tmp/bgtasks-cluster}/pgbouncer.
# `start` stops and wipes a previous instance first, waits until both answer,
# then prints `export BGTASKS_TEST_PGBOUNCER_URL=...` and
# `export BGTASKS_TEST_PGBOUNCER_SESSION_URL=...` on stdout (chatter on stderr).
set -euo pipefail

ROOT=${BGTASKS_CLUSTER_DIR:-/tmp/bgtasks-cluster}
STATE=$ROOT/pgbouncer
TX_PORT=${BGTASKS_PGBOUNCER_PORT:-6543}
SESSION_PORT=${BGTASKS_PGBOUNCER_SESSION_PORT:-6544}
POOL_SIZE=${BGTASKS_PGBOUNCER_POOL_SIZE:-8}
PG_HOST=127.0.0.1 PG_PORT=${BGTASKS_PG_MAIN_PORT:-5432}
TIMEOUT=${BGTASKS_CLUSTER_TIMEOUT:-60}
# PgBouncer refuses to run as root: as root we drop to postgres with -u.
if [[ $(id -u) -eq 0 ]]; then RUN_USER=postgres; else RUN_USER=$(id -un); fi
INSTANCES=("transaction:$TX_PORT" "session:$SESSION_PORT")

log() { echo "pgbouncer.sh: $*" >&2; }
die() { echo "pgbouncer.sh: ERROR: $*" >&2; exit 1; }

wait_until() { # seconds cmd...: poll every 0.25 s until cmd succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < deadline)) || return 1; sleep 0.25; done; }

pid_of() { # mode -> pid of our running pgbouncer for it, or fail
  local f=$STATE/$1.pid pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == pgbouncer ]] && alive "$pid" || return 1
  echo "$pid"
}

# alive pid: running and not a zombie (PID 1 here reaps orphans ~1.5 s late).
alive() { local st; st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null) && [[ -n $st && $st != Z ]]; }

port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

stop_all() {
  local inst mode pid
  for inst in "${INSTANCES[@]}"; do
    mode=${inst%%:*}
    if pid=$(pid_of "$mode"); then
      log "stopping $mode pgbouncer (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      wait_until 10 eval "! alive $pid" ||
        { log "pid $pid ignored SIGTERM; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
      wait_until 5 eval "! alive $pid" || die "pgbouncer pid $pid does not exit; kill it by hand."
    fi
  done
}

psql_at() { # port db sql
  psql -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d "$2" -c "$3"
}

write_ini() { # mode port
  cat >"$STATE/$1.ini" <<EOF
[databases]
* = host=$PG_HOST port=$PG_PORT user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = any
admin_users = postgres
pool_mode = $1
default_pool_size = $POOL_SIZE
max_db_connections = $POOL_SIZE
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits,options
pidfile = $STATE/$1.pid
logfile = $STATE/$1.log
EOF
}

start() {
  command -v pgbouncer >/dev/null || die "pgbouncer is not installed; run scripts/cluster/install.sh first."
  stop_all
  rm -rf "$STATE"
  mkdir -p "$ROOT" "$STATE"
  chmod 755 "$ROOT"   # RUN_USER must be able to traverse it
  chown "$RUN_USER:" "$STATE"
  pg_isready -q -h "$PG_HOST" -p "$PG_PORT" ||
    die "the main PostgreSQL at $PG_HOST:$PG_PORT does not answer; start it first (see .ci/run)."
  local inst mode port started=$SECONDS
  for port in "$TX_PORT" "$SESSION_PORT"; do  # check both before starting either
    ! port_busy "$port" || die "port $port is already in use (ss -ltnp 'sport = :$port'); stop that process or set BGTASKS_PGBOUNCER_PORT / BGTASKS_PGBOUNCER_SESSION_PORT."
  done
  for inst in "${INSTANCES[@]}"; do
    mode=${inst%%:*} port=${inst#*:}
    write_ini "$mode" "$port"
    chown "$RUN_USER:" "$STATE/$mode.ini"
    log "starting $mode pgbouncer on 127.0.0.1:$port"
    if [[ $(id -u) -eq 0 ]]; then
      pgbouncer -q -d -u "$RUN_USER" "$STATE/$mode.ini" >&2 || die "pgbouncer ($mode) failed to start; see $STATE/$mode.log"
    else
      pgbouncer -q -d "$STATE/$mode.ini" >&2 || die "pgbouncer ($mode) failed to start; see $STATE/$mode.log"
    fi
  done
  for inst in "${INSTANCES[@]}"; do
    mode=${inst%%:*} port=${inst#*:}
    wait_until "$TIMEOUT" psql_at "$port" pgbouncer "SHOW VERSION" ||
      die "pgbouncer ($mode) does not answer on 127.0.0.1:$port after ${TIMEOUT}s; see $STATE/$mode.log"
    local got
    got=$(psql_at "$port" pgbouncer "SHOW CONFIG" | awk -F'|' '$1=="pool_mode"{print $2}')
    [[ $got == "$mode" ]] || die "pgbouncer on port $port reports pool_mode '$got', expected '$mode'; see $STATE/$mode.ini"
    psql_at "$port" pgbouncer "SHOW POOLS" >/dev/null || die "SHOW POOLS failed on port $port"
    # The wildcard entry: any database name the main server has goes through.
    for db in test postgres; do
      [[ $(psql_at "$port" "$db" "select 1") == 1 ]] ||
        die "select 1 on database '$db' through 127.0.0.1:$port failed (does '$db' exist on $PG_HOST:$PG_PORT?); see $STATE/$mode.log"
    done
  done
  log "both instances up in $((SECONDS - started))s"
  echo "export BGTASKS_TEST_PGBOUNCER_URL=postgres://postgres@127.0.0.1:$TX_PORT/test"
  echo "export BGTASKS_TEST_PGBOUNCER_SESSION_URL=postgres://postgres@127.0.0.1:$SESSION_PORT/test"
}

status() { # exit 0 when both run, 3 otherwise
  local inst mode port pid rc=0
  for inst in "${INSTANCES[@]}"; do
    mode=${inst%%:*} port=${inst#*:}
    if pid=$(pid_of "$mode") && psql_at "$port" pgbouncer "SHOW VERSION" >/dev/null 2>&1; then
      echo "$mode: running (pid $pid) on 127.0.0.1:$port"
    else
      echo "$mode: down (port $port)"; rc=3
    fi
  done
  return $rc
}

case ${1:-} in
  start) start ;;
  stop) stop_all; log "stopped" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
