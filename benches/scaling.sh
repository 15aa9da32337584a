#!/usr/bin/env bash
# How PostgreSQL throughput grows with processes, on this machine:
# - runners: 1, 2, 4 and 8 `bgtasks process` at once with the same total
#   slots (TOTAL_SLOTS, default 16, split as --threads), draining N no-op
#   tasks seeded in one INSERT;
# - enqueuers: 1 and 4 processes at once enqueueing one task per
#   transaction (benches/measure.rs `enqueue --keep`), N in all.
# For each: tasks/s, the ratio to one process, the machine's CPU busy share
# (from /proc/stat), WAL bytes per task, and how often a sampled backend
# waited on a lock. Called by benches/compare.sh; alone:
#   BGTASKS=target/release/bgtasks MEASURE=target/release/deps/measure-HASH \
#     N=40000 ROUNDS=3 bash benches/scaling.sh
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
B=${BGTASKS:-$HERE/../target/release/bgtasks}; N=${N:-40000}; ROUNDS=${ROUNDS:-3}
TOTAL_SLOTS=${TOTAL_SLOTS:-16}; ENQ_N=${ENQ_N:-8000}
MEASURE=${MEASURE:-}
PG="psql -h 127.0.0.1 -U postgres -qAt"
DB=bgt_scaling
URL=postgres://postgres@127.0.0.1:5432/$DB
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT

$PG -d test -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
$B --database-url "$URL" migrate up >/dev/null || exit 1

cpu() { awk '/^cpu / { print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8 }' /proc/stat; }
wal() { $PG -d $DB -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"; }
# Samples lock waits of this database's backends every 100 ms until $1 exits.
lock_waits() {
  local waits=0 samples=0
  while kill -0 "$1" 2>/dev/null; do
    w=$($PG -d $DB -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB' AND wait_event_type = 'Lock'")
    waits=$((waits + ${w:-0})); samples=$((samples + 1)); sleep 0.1
  done
  echo "$waits $samples"
}
seed() {
  $PG -d $DB -c "TRUNCATE background_task, background_task_completedtask" \
    -c "INSERT INTO background_task (task_name, task_params, task_hash, verbose_name, priority, run_at, repeat, repeat_until, queue, attempts, failed_at, last_error, locked_by, locked_at, creator_object_id, creator_content_type_id)
    SELECT 'bgtasks.noop', '[[], {}]', '0d2ca0041b4eca2ec9470ddbe5757deeb812e4b2', NULL, 0, now() - interval '1 second', 0, NULL, NULL, 0, NULL, '', NULL, NULL, NULL, NULL FROM generate_series(1, $N)"
}
any_alive() { for p in "$@"; do kill -0 "$p" 2>/dev/null && return 0; done; return 1; }
left() { $PG -d $DB -c "SELECT count(*) FROM background_task"; }

# report KIND PROCS N SECONDS CPU0 CPU1 WAL0 WAL1 WAITS SAMPLES: one JSON line.
report() {
  python3 - "$@" <<'PY'
import json, sys
kind, procs, n, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
b0, t0 = map(float, sys.argv[5].split()); b1, t1 = map(float, sys.argv[6].split())
wal0, wal1 = int(sys.argv[7]), int(sys.argv[8]); waits, samples = int(sys.argv[9]), int(sys.argv[10])
print(json.dumps({"metric": "scaling_" + kind, "processes": procs, "n": n,
  "rate": round(n / secs, 1), "secs": round(secs, 2),
  "cpu_busy": round((b1 - b0) / max(t1 - t0, 1), 3),
  "wal_bytes_per_task": round((wal1 - wal0) / n), "lock_wait_share": round(waits / max(samples, 1), 3)}))
PY
}

drain() { # PROCS
  local procs=$1 threads=$((TOTAL_SLOTS / $1)) pids=() c0 c1 w0 w1 t0 t1 waits
  seed
  w0=$(wal); c0=$(cpu); t0=$(date +%s.%N)
  for _ in $(seq 1 "$procs"); do
    $B --database-url "$URL" process --sleep 1 --threads "$threads" >/dev/null 2>>"$WORK/runner.err" &
    pids+=($!)
  done
  ( while [ "$(left)" != 0 ]; do sleep 0.05; done ) & local watcher=$!
  waits=$(lock_waits $watcher)
  t1=$(date +%s.%N); c1=$(cpu); w1=$(wal)
  kill -TERM "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
  report runners "$procs" "$N" "$(echo "$t1 - $t0" | bc)" "$c0" "$c1" "$w0" "$w1" $waits
}

enqueue() { # PROCS
  local procs=$1 each=$((ENQ_N / $1)) pids=() c0 c1 w0 w1 t0 t1
  $PG -d $DB -c "TRUNCATE background_task, background_task_completedtask"
  w0=$(wal); c0=$(cpu); t0=$(date +%s.%N)
  for _ in $(seq 1 "$procs"); do
    "$MEASURE" enqueue --url "$URL" --n "$each" --keep >/dev/null 2>>"$WORK/enqueue.err" &
    pids+=($!)
  done
  ( while any_alive "${pids[@]}"; do sleep 0.05; done ) & local watcher=$!
  local waits
  waits=$(lock_waits $watcher)
  wait "${pids[@]}"
  t1=$(date +%s.%N); c1=$(cpu); w1=$(wal)
  report enqueuers "$procs" "$((each * procs))" "$(echo "$t1 - $t0" | bc)" "$c0" "$c1" "$w0" "$w1" $waits
}

for round in $(seq 1 "$ROUNDS"); do
  for procs in 1 2 4 8; do drain $procs; done
  if [ -n "$MEASURE" ]; then
    for procs in 1 4; do enqueue $procs; done
  fi
done | tee "$WORK/all.jsonl"

python3 - "$WORK/all.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print("\nScaling on PostgreSQL (medians of each set-up's rounds):")
print(f"{'set-up':<14}{'procs':>6}{'tasks/s':>10}{'x one':>8}{'CPU busy':>10}{'WAL B/task':>12}{'lock waits':>12}")
for kind in ("scaling_runners", "scaling_enqueuers"):
    by = {}
    for r in rows:
        if r["metric"] == kind:
            by.setdefault(r["processes"], []).append(r)
    if not by:
        continue
    one = statistics.median(r["rate"] for r in by[min(by)])
    for procs in sorted(by):
        rs = by[procs]
        med = lambda k: statistics.median(r[k] for r in rs)
        print(f"{kind[8:]:<14}{procs:>6}{med('rate'):>10.0f}{med('rate') / one:>8.2f}"
              f"{med('cpu_busy'):>10.0%}{med('wal_bytes_per_task'):>12.0f}{med('lock_wait_share'):>12.2f}")
PY
