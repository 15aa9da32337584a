#!/usr/bin/env bash
# background-tasks against its peers (graphile-worker, apalis,
# django-background-tasks) and the bare-SQL floors, measured in one run on
# this machine, then a table of every figure and target with PASS/MISS.
# Besides the in-process measurements (benches/measure.rs), the bgtasks
# binary is timed from outside as users run it: its default runner against
# graphile-worker's default (../shared/bench/blackbox), and the command
# line's enqueue against psql and the SQL floor (benches/cli.sh).
# It ends with benches/scaling.sh: PostgreSQL with 1, 2, 4, 8 runner
# processes and 1, 4 enqueuers.
#
#   bash benches/compare.sh                  # full run (about 35-45 min on 2 cores)
#   QUICK=1 bash benches/compare.sh          # smoke run: small N, few reps (about 11 min)
#   SKIP_PEERS=1 bash benches/compare.sh     # reuse the peers' results already in $RESULTS
#   python3 benches/compare.py target/compare/results   # the table again, from saved results
#   bash benches/observability.sh            # only what metrics and traces cost the runner
#
# Environment: PEERS_DIR (default ../shared/bench/peers beside the repo),
# RESULTS (default target/compare/results), QUICK, SKIP_PEERS, SKIP_OURS,
# SKIP_BLACKBOX, RUNS (repetitions of each measurement in a full run,
# default 3).
# The peers use PostgreSQL 15 at 127.0.0.1:5432 as role root (password
# 'bench', set by their common.sh) and install under /tmp/bench-peers.
# Ours also uses MariaDB at 127.0.0.1:3306 as root.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PEERS_DIR=$(cd "${PEERS_DIR:-$HERE/../../shared/bench/peers}" && pwd) || {
  echo "compare.sh: no peers folder (set PEERS_DIR)" >&2; exit 1; }
OUT=$ROOT/target/compare
export RESULTS=${RESULTS:-$OUT/results}
QUICK=${QUICK:-0}
SKIP_PEERS=${SKIP_PEERS:-0}
SKIP_OURS=${SKIP_OURS:-0}
SKIP_BLACKBOX=${SKIP_BLACKBOX:-0}
mkdir -p "$OUT" "$RESULTS"
: >"$OUT/errors.log"
cd "$ROOT"

if [ "$QUICK" = 1 ]; then
  PEER_N=2000 RUNS=1 PROC_N=10000 ENQ_N=2000 LAT_REPS=10 BACKLOG=100000 WINDOWS=3
  RSS_N=100000 IDLE_SECS=10 DBT_N_PROC=100 DBT_LAT_REPS=10 BB_N=5000 CLI_N=20000 CLI_CALLS=10 SCALE_N=10000
else
  PEER_N=10000 RUNS=${RUNS:-3} PROC_N=10000 ENQ_N=10000 LAT_REPS=100 BACKLOG=1000000 WINDOWS=3
  RSS_N=1000000 IDLE_SECS=30 DBT_N_PROC=500 DBT_LAT_REPS=20 BB_N=20000 CLI_N=100000 CLI_CALLS=30 SCALE_N=40000
fi
PG_URL=postgres://root:bench@127.0.0.1:5432/bench_bgtasks
MY_URL=mysql://root@127.0.0.1:3306/bench_bgtasks
SQLITE_FILE=target/compare/bench.sqlite3
SQLITE_URL="sqlite://$SQLITE_FILE?mode=rwc"

START=$(date +%s)
say() { printf '\n== %s (%ss)\n' "$*" $(( $(date +%s) - START )); }
# step NAME OUTFILE CMD...: runs CMD, appends its stdout to OUTFILE (and shows it);
# a failure is reported and the run goes on.
step() {
  local name=$1 out=$2; shift 2
  say "$name"
  "$@" 2>>"$OUT/errors.log" | tee -a "$out"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "compare.sh: $name FAILED (exit $rc; see $OUT/errors.log)" | tee -a "$OUT/errors.log"
}

say "machine: $(nproc) cores, $(uname -r); QUICK=$QUICK; results in $RESULTS"

# ---------------------------------------------------------------- servers
# PostgreSQL and the role root (password 'bench'): the peers' own set-up.
source "$PEERS_DIR/common.sh"
if ! mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
  echo "MariaDB is down: starting it"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  for _ in $(seq 1 60); do mariadb-admin -h 127.0.0.1 -u root ping >/dev/null 2>&1 && break; sleep 1; done
fi
psql -d postgres -qc "DROP DATABASE IF EXISTS bench_bgtasks WITH (FORCE)"
psql -d postgres -qc "CREATE DATABASE bench_bgtasks"
mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS bench_bgtasks; CREATE DATABASE bench_bgtasks"
PG_VERSION=$(psql -d postgres -tAc 'SHOW server_version'); MY_VERSION=$(mariadb -h 127.0.0.1 -u root -N -e 'SELECT VERSION()')
echo "PostgreSQL $PG_VERSION; MariaDB $MY_VERSION"
# What this run was, for the report's header (kept from the measuring run under SKIP_OURS=1).
[ "$SKIP_OURS" = 1 ] || cat >"$RESULTS/meta.json" <<EOF
{"date": "$(date -u +%FT%TZ)", "commit": "$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD 2>/dev/null || echo '+changes')",
 "cores": $(nproc), "quick": $QUICK, "skip_peers": $SKIP_PEERS, "peer_n": $PEER_N, "runs": $RUNS, "process_n": $PROC_N,
 "enqueue_n": $ENQ_N, "latency_reps": $LAT_REPS, "backlog": $BACKLOG, "rss_n": $RSS_N, "idle_secs": $IDLE_SECS,
 "postgres": "$PG_VERSION", "mariadb": "$MY_VERSION", "sqlite": "$(python3 -c 'import sqlite3;print(sqlite3.sqlite_version)')"}
EOF

# ---------------------------------------------------------------- peers
if [ "$SKIP_PEERS" != 1 ]; then
  rm -f "$RESULTS"/{floor,graphile-worker,rust-apalis,django-background-tasks,idle_check}.jsonl
  # Each peer's own script, as run_all.sh calls it.
  for p in floor graphile-worker rust-apalis; do
    step "peer $p (N=$PEER_N)" "$RESULTS/$p.jsonl" env N=$PEER_N RUNS=$RUNS bash "$PEERS_DIR/$p/run.sh"
  done
  # django-background-tasks: its run.sh also measures one-at-a-time enqueue,
  # the tight drain loop, async mode and the default --sleep 5 latency
  # (about 20 min); the comparison needs process_tasks throughput and its
  # pickup latency on SQLite and PostgreSQL, so run only those, with the
  # same set-up as its run.sh.
  dbt() {
    set -e
    local V=$PEERS/venv-dbt D=$PEERS_DIR/django-background-tasks
    [ -x $V/bin/python ] || python3.11 -m venv $V
    $V/bin/pip install -q "django-background-tasks==1.2.8" "Django>=5.0,<5.1" psycopg2-binary >&2
    dropdb --if-exists bench_dbt; createdb bench_dbt
    rm -f $PEERS/data/dbt.sqlite3*
    (cd $D/benchproj && for db in sqlite pg; do BENCH_DB=$db $V/bin/python manage.py migrate -v0; done)
    cd $D
    for db in sqlite pg; do
      BENCH_DB=$db BENCH_ASYNC=0 WHAT=cmd,lat RUNS=$RUNS N_PROC=$DBT_N_PROC LAT_REPS=$DBT_LAT_REPS \
        $V/bin/python bench_dbt.py
    done
  }
  step "peer django-background-tasks (process_tasks and latency)" "$RESULTS/django-background-tasks.jsonl" dbt
  # idle_check.sh ends with the exit status of the worker it killed (143).
  idle_peers() { bash "$PEERS_DIR/idle_check.sh"; return 0; }
  step "peers' idle check" "$RESULTS/idle_check.jsonl" idle_peers
else
  say "SKIP_PEERS=1: reusing $(ls "$RESULTS" | grep -v '^ours-' | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- ours
if [ "$SKIP_OURS" != 1 ]; then
  say "build: cargo bench --bench measure --no-run"
  BUILD_LOG=$OUT/build.log
  cargo bench --bench measure --no-run >"$BUILD_LOG" 2>&1 || { tail -30 "$BUILD_LOG"; echo "compare.sh: build failed"; exit 1; }
  MEASURE=$(sed -nE 's/.*Executable .*\((.*measure-[^)]*)\).*/\1/p' "$BUILD_LOG" | tail -1)
  [ -x "$MEASURE" ] || MEASURE=$(ls -t target/release/deps/measure-* | grep -v '\.d$' | head -1)
  echo "measure: $MEASURE"
  export MEASURE_CHILD_LOG=$OUT/child.log
  m() { "$MEASURE" "$@"; }

  rm -f "$RESULTS"/ours-*.jsonl "$SQLITE_FILE"*
  for be in sqlite postgres mariadb; do
    case $be in sqlite) URL=$SQLITE_URL;; postgres) URL=$PG_URL;; mariadb) URL=$MY_URL;; esac
    F=$RESULTS/ours-$be.jsonl
    for r in $(seq 1 $RUNS); do
      step "ours $be: enqueue run $r (N=$ENQ_N)" "$F" m enqueue --url "$URL" --n $ENQ_N
    done
    for r in $(seq 1 $RUNS); do
      step "ours $be: process run $r (N=$PROC_N)" "$F" m process --url "$URL" --n $PROC_N --windows 1
    done
    # The same with Django's full index set (what a database shared with a
    # Django app carries); the next step puts the lean set back.
    step "ours $be: enqueue, Django's index set (N=$ENQ_N)" "$F" m enqueue --url "$URL" --n $ENQ_N --django-indexes
    for r in $(seq 1 $RUNS); do
      step "ours $be: process run $r, Django's index set (N=$PROC_N)" "$F" \
        m process --url "$URL" --n $PROC_N --windows 1 --django-indexes
    done
    step "ours $be: latency same process ($LAT_REPS reps)" "$F" m latency --url "$URL" --reps $LAT_REPS
    step "ours $be: latency cross process ($LAT_REPS reps)" "$F" m latency --url "$URL" --reps $LAT_REPS --cross-process
    if [ $be != mariadb ]; then
      step "ours $be: process with $BACKLOG more pending" "$F" \
        m process --url "$URL" --n $PROC_N --backlog $BACKLOG --windows $WINDOWS
    fi
    if [ $be = sqlite ]; then
      step "ours $be: runner RSS over $RSS_N tasks" "$F" m rss --url "$URL" --n $RSS_N
    fi
    step "ours $be: idle runner (${IDLE_SECS}s)" "$F" m idle --url "$URL" --secs $IDLE_SECS
    if [ $be = mariadb ]; then
      step "MariaDB SQL floor (N=$PEER_N)" "$RESULTS/ours-floor-mariadb.jsonl" \
        m floor --url "$URL" --n $PEER_N --runs $RUNS
    fi
  done
fi

# ---------------------------------------------------------------- the binary, from outside
if [ "$SKIP_BLACKBOX" != 1 ]; then
  say "build: cargo build --release --bin bgtasks"
  cargo build --release --bin bgtasks >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; echo "compare.sh: build failed"; exit 1; }
  BGTASKS=$ROOT/target/release/bgtasks
  BB=$(cd "$PEERS_DIR/../blackbox" && pwd)
  rm -f "$RESULTS"/blackbox-*.jsonl "$RESULTS"/cli.jsonl
  # The issue's set-up: the runner with no flag but a 1 s poll (its default
  # is the seed's 5 s), against graphile-worker at its default concurrency 1.
  step "black box PG: default bgtasks process vs graphile-worker default, N=$BB_N x $RUNS" \
    "$RESULTS/blackbox-pg-default.jsonl" \
    env BGTASKS="$BGTASKS" N=$BB_N ROUNDS=$RUNS OPTS="--sleep 1" GW_CONCURRENCY=1 bash "$BB/pg_drain.sh"
  step "black box PG: 2 threads x 64 tasks vs graphile-worker concurrency 10, N=$BB_N x $RUNS" \
    "$RESULTS/blackbox-pg-batched.jsonl" \
    env BGTASKS="$BGTASKS" N=$BB_N ROUNDS=$RUNS GW_CONCURRENCY=10 bash "$BB/pg_drain.sh"
  for r in $(seq 1 $RUNS); do
    step "black box SQLite: default bgtasks process, run $r (N=$BB_N)" "$RESULTS/blackbox-sqlite.jsonl" \
      env BGTASKS="$BGTASKS" N=$BB_N OPTS="--sleep 1" DIR="$OUT" bash "$BB/sqlite_drain.sh"
    step "black box SQLite: --prefetch 0 (the seed's rhythm), run $r (N=$BB_N)" "$RESULTS/blackbox-sqlite.jsonl" \
      env BGTASKS="$BGTASKS" N=$BB_N OPTS="--sleep 1 --prefetch 0" DIR="$OUT" bash "$BB/sqlite_drain.sh"
  done
  # SQLite's floor for the runner's own statements, without the runner
  # (benches/sqlite_floor.sh): the lean and Django's index sets.
  rm -f "$RESULTS"/sqlite-floor.jsonl
  step "SQLite floor of the runner's statements (N=$SCALE_N)" "$RESULTS/sqlite-floor.jsonl" \
    env BGTASKS="$BGTASKS" N=$SCALE_N DIR="$OUT" bash "$HERE/sqlite_floor.sh"
  step "SQLite floor of the runner's statements, Django's index set (N=$SCALE_N)" "$RESULTS/sqlite-floor.jsonl" \
    env BGTASKS="$BGTASKS" N=$SCALE_N DIR="$OUT" DJANGO_INDEXES=1 SYNCS=FULL BATCHES=128 bash "$HERE/sqlite_floor.sh"
  # One enqueue per process against psql, and --from FILE against the SQL
  # floor; with the default sslmode (TLS when the server offers it) and without.
  step "CLI on PG, default sslmode (N=$CLI_N, $CLI_CALLS calls)" "$RESULTS/cli.jsonl" \
    env BGTASKS="$BGTASKS" N=$CLI_N RUNS=$RUNS CALLS=$CLI_CALLS JSON=1 bash "$HERE/cli.sh"
  step "CLI on PG, sslmode=disable (N=$CLI_N, $CLI_CALLS calls)" "$RESULTS/cli.jsonl" \
    env BGTASKS="$BGTASKS" N=$CLI_N RUNS=$RUNS CALLS=$CLI_CALLS JSON=1 PARAMS='?sslmode=disable' bash "$HERE/cli.sh"
  # What the metrics endpoint (scraped every second) and OTLP traces cost
  # the default runner, against the runner without them, same rounds.
  step "observability: default runner with and without metrics and traces (N=$BB_N x $RUNS)" \
    "$OUT/observability.txt" env BGTASKS="$BGTASKS" N=$BB_N ROUNDS=$RUNS bash "$HERE/observability.sh"
  # How PostgreSQL throughput grows with runner processes (same total
  # slots) and with enqueuing processes (benches/scaling.sh).
  step "scaling: 1, 2, 4, 8 runners and 1, 4 enqueuers on PostgreSQL (N=$SCALE_N x $RUNS)" \
    "$OUT/scaling.txt" env BGTASKS="$BGTASKS" MEASURE="${MEASURE:-}" N=$SCALE_N ROUNDS=$RUNS bash "$HERE/scaling.sh"
fi

# ---------------------------------------------------------------- report
say "report"
python3 "$HERE/compare.py" "$RESULTS" | tee "$OUT/report.txt"
if [ -f "$OUT/scaling.txt" ]; then
  echo; sed -n '/^Scaling on PostgreSQL/,$p' "$OUT/scaling.txt" | tee -a "$OUT/report.txt"
fi
if [ -f "$OUT/observability.txt" ]; then
  echo; echo "Observability overhead (default runner, PostgreSQL):"
  grep "x plain" "$OUT/observability.txt" | tee -a "$OUT/report.txt"
fi
echo
echo "total: $(( $(date +%s) - START )) s; report saved to $OUT/report.txt"
