#!/usr/bin/env bash
# galera.sh start|stop|status|kill N|start-node N
# Starts a three-node MariaDB 10.11 Galera cluster (name bgtasks) on loopback,
# mariadbd as user mysql (no systemd): SQL ports ${BGTASKS_GALERA_PORTS:-3311 3312 3313},
# group comm 4571-4573, IST 4581-4583, rsync SST receive 4591-4593.
# State in ${BGTASKS_CLUSTER_DIR:-/tmp/bgtasks-cluster}/galera. root@127.0.0.1 has
# an empty password; database `test` exists. `start` wipes a previous cluster,
# waits until all three are Synced (size 3) and prints on stdout
# `export BGTASKS_TEST_GALERA_URLS="mysql://root@127.0.0.1:3311/test ..."`.
set -euo pipefail

ROOT=${BGTASKS_CLUSTER_DIR:-/tmp/bgtasks-cluster}; STATE=$ROOT/galera
read -r -a SQL_PORTS <<<"${BGTASKS_GALERA_PORTS:-3311 3312 3313}"
TIMEOUT=${BGTASKS_CLUSTER_TIMEOUT:-60}
GCOMM=gcomm://127.0.0.1:4571,127.0.0.1:4572,127.0.0.1:4573

log() { echo "galera.sh: $*" >&2; }
die() { echo "galera.sh: ERROR: $*" >&2; exit 1; }
wait_until() { # seconds cmd...: poll every 0.3 s
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < deadline)) || return 1; sleep 0.3; done; }
# alive pid: running and not a zombie (PID 1 here reaps orphans late).
alive() { local st; st=$(awk '/^State:/{print $2}' "/proc/$1/status" 2>/dev/null) && [[ -n $st && $st != Z ]]; }
cnf() { echo "$STATE/node$1.cnf"; }
q() { mariadb --connect-timeout=2 -h 127.0.0.1 -P "${SQL_PORTS[$1-1]}" -u root -N -B -e "$2"; }
st() { # N -> "STATE_COMMENT READY SIZE", empty when the node does not answer
  q "$1" "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment','wsrep_ready','wsrep_cluster_size')" 2>/dev/null |
    awk '{a[$1]=$2} END {if (NR) print a["wsrep_local_state_comment"], a["wsrep_ready"], a["wsrep_cluster_size"]}'; }
synced() { [[ $(st "$1") == "Synced ON "* ]]; }
synced_n() { [[ $(st "$1") == "Synced ON $2" ]]; }
node_pid() { # N -> pid of our running mariadbd for node N, as recorded by launch()
  local pid
  pid=$(cat "$STATE/node$1.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--defaults-file=$(cnf "$1")" && echo "$pid"; }
check_node() { [[ $1 =~ ^[1-3]$ ]] || die "node must be 1, 2 or 3 (got '${1:-}')."; }

write_cnf() { # N
  local n=$1 d=$STATE/node$1
  cat >"$(cnf "$n")" <<EOF
[mysqld]
datadir=$d/data
socket=$d/mysqld.sock
port=${SQL_PORTS[n-1]}
pid-file=$d/mysqld.pid
log-error=$d/error.log
bind-address=127.0.0.1
skip-name-resolve
max_connections=300
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=64M
innodb_flush_log_at_trx_commit=2
wsrep_on=ON
wsrep_provider=/usr/lib/galera/libgalera_smm.so
wsrep_cluster_name=bgtasks
wsrep_cluster_address=$GCOMM
wsrep_node_name=node$n
wsrep_node_address=127.0.0.1:457$n
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:457$n;ist.recv_addr=127.0.0.1:458$n;gcache.size=64M"
wsrep_sst_receive_address=127.0.0.1:459$n
wsrep_sst_method=rsync
EOF
  mkdir -p "$d/data"; chown -R mysql: "$d" "$(cnf "$n")"; }

launch() { # N [--wsrep-new-cluster]
  local n=$1; shift
  log "starting node $n on 127.0.0.1:${SQL_PORTS[n-1]} $*"
  (cd / && exec setsid nohup /usr/sbin/mariadbd --defaults-file="$(cnf "$n")" --user=mysql "$@" \
     >>"$STATE/node$n/stdout.log" 2>&1 </dev/null) &
  echo $! >"$STATE/node$n.pid"; }  # exec chain: $! is mariadbd itself
wait_synced() { # N size: poll until Synced in a cluster of that size; fail fast if it dies
  local deadline=$((SECONDS + TIMEOUT))
  until synced_n "$1" "$2"; do
    node_pid "$1" >/dev/null || die "node $1 died while starting; see $STATE/node$1/error.log"
    ((SECONDS < deadline)) || die "node $1 not Synced with cluster size $2 after ${TIMEOUT}s; see $STATE/node$1/error.log"
    sleep 0.3
  done; }

stop_all() {
  local n pid pids=()
  for n in 3 2 1; do pid=$(node_pid "$n") && { log "stopping node $n (pid $pid)"; kill -TERM "$pid" || true; pids+=("$pid"); }; done
  for pid in "${pids[@]}"; do
    wait_until "$TIMEOUT" eval "! alive $pid" || { log "pid $pid ignored SIGTERM; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  done
  # Leftover SST helpers (rsync daemon, wsrep_sst_rsync) of our data dirs only.
  for pid in $(grep -lsF -- "$STATE/" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) =~ ^(mariadbd|rsync|wsrep_sst_rsync)$ ]] && alive "$pid" &&
      { log "killing leftover pid $pid"; kill -KILL "$pid" 2>/dev/null || true; }
  done; return 0
}

start() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (mariadbd --user=mysql); rerun with sudo."
  [[ -f /usr/lib/galera/libgalera_smm.so ]] && command -v rsync >/dev/null && command -v mariadb-install-db >/dev/null ||
    die "galera-4, rsync or mariadb-server missing; run scripts/cluster/install.sh."
  [[ ${#SQL_PORTS[@]} -eq 3 ]] || die "BGTASKS_GALERA_PORTS must list 3 ports (got '${SQL_PORTS[*]}')."
  stop_all
  rm -rf "$STATE"; mkdir -p "$ROOT" "$STATE"; chmod 755 "$ROOT"; chown mysql: "$STATE"
  local n p t0=$SECONDS  # t0: after the stop of a previous instance
  for p in "${SQL_PORTS[@]}" 4571 4572 4573 4581 4582 4583 4591 4592 4593; do
    ! ss -Hltn "sport = :$p" | grep -q . || die "port $p is in use (ss -ltnp 'sport = :$p'); stop that process first."
  done
  for n in 1 2 3; do write_cnf "$n"; done
  # Only node 1 gets a fresh system schema; nodes 2 and 3 get node 1's by SST.
  # normal = root@localhost/127.0.0.1/::1 with an empty password (no unix_socket-only root).
  log "mariadb-install-db for node 1"
  mariadb-install-db --defaults-file="$(cnf 1)" --user=mysql --auth-root-authentication-method=normal \
    --skip-test-db >"$STATE/install-db.log" 2>&1 || die "mariadb-install-db failed; see $STATE/install-db.log"
  launch 1 --wsrep-new-cluster
  wait_synced 1 1
  q 1 "CREATE USER IF NOT EXISTS root@'127.0.0.1'; GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION;
       CREATE DATABASE IF NOT EXISTS test" || die "setting up root@127.0.0.1 / database test on node 1 failed"
  for n in 2 3; do launch "$n"; wait_synced "$n" "$n"; done
  for n in 1 2 3; do
    synced_n "$n" 3 && q "$n" "USE test" || die "node $n: not Synced in a 3-node cluster or no database test; see $STATE/node$n/error.log"
  done
  chown -R mysql: "$STATE"  # logs/pid files written by root
  log "3 nodes Synced in $((SECONDS - t0))s"
  echo "export BGTASKS_TEST_GALERA_URLS=\"mysql://root@127.0.0.1:${SQL_PORTS[0]}/test mysql://root@127.0.0.1:${SQL_PORTS[1]}/test mysql://root@127.0.0.1:${SQL_PORTS[2]}/test\""
}

status() { # exit 0 if any node answers, 3 if all are down
  local n rc=3 s
  for n in 1 2 3; do
    if s=$(st "$n") && [[ -n $s ]]; then
      read -r -a s <<<"$s"; rc=0
      echo "node $n 127.0.0.1:${SQL_PORTS[n-1]}: ${s[0]} ready=${s[1]} cluster_size=${s[2]}"
    else echo "node $n 127.0.0.1:${SQL_PORTS[n-1]}: down"; fi
  done
  return $rc
}

kill_node() {
  local pid; check_node "${1:-}"
  pid=$(node_pid "$1") || { log "node $1 is not running; nothing to kill"; return 0; }
  log "SIGKILL node $1 (pid $pid)"; kill -KILL "$pid"
  wait_until 10 eval "! alive $pid" || die "node $1 (pid $pid) survives SIGKILL?"
}

start_node() {
  check_node "${1:-}"
  [[ -f $(cnf "$1") ]] || die "no cluster state in $STATE; run '$0 start' first."
  if node_pid "$1" >/dev/null; then log "node $1 already running"; wait_synced "$1" "$(st "$1" | cut -d' ' -f3)"; return 0; fi
  local others=0 m
  for m in 1 2 3; do [[ $m != "$1" ]] && synced "$m" && others=$((others + 1)); done
  ((others)) || die "no other node is Synced to join; run '$0 start' to bootstrap a fresh cluster."
  # A killed node left gvwstate.dat: rejoining under its old gcomm UUID makes
  # the survivors stall ~15 s (evs.inactive_timeout); a fresh UUID joins at once.
  rm -f "$STATE/node$1/data/gvwstate.dat"
  launch "$1"
  wait_synced "$1" $((others + 1))
  log "node $1 rejoined"
}

case ${1:-} in
  start) start ;;
  stop) stop_all; log "stopped" ;;
  status) status ;;
  kill) kill_node "${2:-}" ;;
  start-node) start_node "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|kill N|start-node N" >&2; exit 2 ;;
esac
