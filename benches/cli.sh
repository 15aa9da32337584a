#!/usr/bin/env bash
# `bgtasks enqueue` from the command line on PostgreSQL, against peers
# measured in the same run on the same server:
#
# - one call: `bgtasks enqueue bgtasks.noop` against `psql -c 'select 1'`
#   (each opens one connection with its default sslmode, so both pay the
#   same TLS handshake), interleaved, medians of CALLS calls;
# - a file: `bgtasks enqueue --from FILE` of N JSON lines (with and without
#   --atomic) against the server's own `INSERT ... SELECT FROM
#   generate_series` of the same rows (the SQL floor: no client, no
#   parsing), medians of RUNS runs.
#
#   cargo build --release --bin bgtasks && bash benches/cli.sh
#   N=1000000 RUNS=1 bash benches/cli.sh
#
# Environment: BGTASKS (default target/release/bgtasks), PG_URL (a server
# URL without database, default postgres://postgres@127.0.0.1:5432; a
# database bgt_bench_cli_PID is created and dropped), PARAMS (a query
# string for both clients' URL, such as '?sslmode=disable'), N (lines,
# default 100000), RUNS (default 3), CALLS (default 30), JSON=1 (also print
# one JSON line per figure, for benches/compare.py).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGTASKS=${BGTASKS:-$ROOT/target/release/bgtasks}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
N=${N:-100000}
RUNS=${RUNS:-3}
CALLS=${CALLS:-30}
PARAMS=${PARAMS:-}
JSON=${JSON:-0}
DB=bgt_bench_cli_$$
WORK=$(mktemp -d)
psql "$PG_URL/postgres" -qc "CREATE DATABASE $DB"
trap 'psql "$PG_URL/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"; rm -rf "$WORK"' EXIT
export DATABASE_URL=$PG_URL/$DB$PARAMS
"$BGTASKS" migrate >/dev/null 2>&1
sql() { psql "$DATABASE_URL" -qAtc "$1"; }
now_us() { echo $(($(date +%s%N) / 1000)); }
median() { sort -n | awk '{ v[NR] = $1 } END { print ((NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

echo "load: $(cut -d' ' -f1-3 /proc/loadavg); PostgreSQL $(sql 'SHOW server_version'), ssl $(sql 'SHOW ssl')"

# One call each, interleaved so both see the same load.
: >"$WORK/ours" && : >"$WORK/psql"
for _ in $(seq "$CALLS"); do
  t0=$(now_us)
  "$BGTASKS" enqueue bgtasks.noop >/dev/null
  t1=$(now_us)
  psql "$DATABASE_URL" -qAtc 'SELECT 1' >/dev/null
  t2=$(now_us)
  echo $((t1 - t0)) >>"$WORK/ours"
  echo $((t2 - t1)) >>"$WORK/psql"
done
ours=$(median <"$WORK/ours")
peer=$(median <"$WORK/psql")
awk -v o="$ours" -v p="$peer" 'BEGIN { printf "one call: bgtasks enqueue %.1f ms, psql -c '\''select 1'\'' %.1f ms (%.2fx)\n", o / 1000, p / 1000, o / p }'
[ "$JSON" = 1 ] && awk -v o="$ours" -v p="$peer" -v q="$PARAMS" -v c="$CALLS" \
  'BEGIN { printf "{\"metric\": \"cli_call\", \"params\": \"%s\", \"calls\": %d, \"ours_ms\": %.3f, \"psql_ms\": %.3f}\n", q, c, o / 1000, p / 1000 }'

# The file and the floor write the same rows.
seq 0 $((N - 1)) | awk '{ printf "{\"name\": \"bgtasks.echo\", \"args\": [%d, \"xxxxxxxxxxxxxxxxxxxx\"], \"kwargs\": {\"to\": \"user%d@example.com\"}}\n", $1, $1 }' >"$WORK/tasks.jsonl"
floor_sql="INSERT INTO background_task (task_name, task_params, task_hash, priority, run_at, repeat, attempts, last_error)
  SELECT 'bgtasks.echo', '[[' || i || ', \"xxxxxxxxxxxxxxxxxxxx\"], {\"to\": \"user' || i || '@example.com\"}]',
         substr(encode(sha256(i::text::bytea), 'hex'), 1, 40), 0, now(), 0, 0, ''
  FROM generate_series(0, $((N - 1))) i"
rate() { awk -v n="$N" -v us="$1" 'BEGIN { printf "%.0f\n", n / (us / 1e6) }'; }
for what in file atomic floor; do
  : >"$WORK/$what"
done
for _ in $(seq "$RUNS"); do
  for what in file atomic floor; do
    sql 'TRUNCATE background_task'
    t0=$(now_us)
    case $what in
      file) "$BGTASKS" enqueue --from "$WORK/tasks.jsonl" >/dev/null ;;
      atomic) "$BGTASKS" enqueue --from "$WORK/tasks.jsonl" --atomic >/dev/null ;;
      floor) sql "$floor_sql" ;;
    esac
    t1=$(now_us)
    [ "$(sql 'SELECT count(*) FROM background_task')" = "$N" ] || { echo "cli.sh: $what did not write $N rows" >&2; exit 1; }
    rate $((t1 - t0)) >>"$WORK/$what"
  done
done
file=$(median <"$WORK/file")
atomic=$(median <"$WORK/atomic")
floor=$(median <"$WORK/floor")
awk -v n="$N" -v f="$file" -v a="$atomic" -v s="$floor" 'BEGIN {
  printf "enqueue --from, %d lines: %.0f tasks/s, --atomic %.0f tasks/s; SQL floor %.0f rows/s (%.2fx, %.2fx)\n", n, f, a, s, f / s, a / s }'
[ "$JSON" = 1 ] && awk -v n="$N" -v f="$file" -v a="$atomic" -v s="$floor" -v q="$PARAMS" -v r="$RUNS" \
  'BEGIN { printf "{\"metric\": \"cli_bulk\", \"params\": \"%s\", \"n\": %d, \"runs\": %d, \"file\": %.0f, \"atomic\": %.0f, \"floor\": %.0f}\n", q, n, r, f, a, s }'
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
