#!/usr/bin/env bash
# What metrics and traces cost the runner: the default `bgtasks process
# --sleep 1` draining N no-op tasks on PostgreSQL in four modes, interleaved
# round by round so the machine's drift hits them alike:
#   plain    no metrics endpoint, no OTLP export
#   metrics  --metrics-addr, scraped every second (as Prometheus would)
#   traces   OTEL_EXPORTER_OTLP_ENDPOINT set: one span per execution,
#            exported in batches to a local OTLP/HTTP receiver
#   both     the two together
# Prints one JSON line per drain and, at the end, each mode's median rate
# and its ratio to plain.
#   BGTASKS=target/release/bgtasks N=20000 ROUNDS=3 bash benches/observability.sh
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
B=${BGTASKS:-$HERE/../target/release/bgtasks}; N=${N:-20000}; ROUNDS=${ROUNDS:-3}
OPTS=${OPTS:---sleep 1}
PG="psql -h 127.0.0.1 -U postgres -qAt"
DB=bgt_observability
URL=postgres://postgres@127.0.0.1:5432/$DB
WORK=$(mktemp -d)
trap 'kill $RECEIVER 2>/dev/null; rm -rf "$WORK"' EXIT

# A receiver that takes OTLP/HTTP exports and throws them away.
OTLP_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$OTLP_PORT" >/dev/null 2>&1 <<'EOF' &
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *args): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
EOF
RECEIVER=$!
METRICS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

$PG -d test -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
$B --database-url "$URL" migrate up >/dev/null || exit 1
seed() {
  $PG -d $DB -c "INSERT INTO background_task (task_name, task_params, task_hash, verbose_name, priority, run_at, repeat, repeat_until, queue, attempts, failed_at, last_error, locked_by, locked_at, creator_object_id, creator_content_type_id)
    SELECT 'bgtasks.noop', '[[], {}]', '0d2ca0041b4eca2ec9470ddbe5757deeb812e4b2', NULL, 0, now() - interval '1 second', 0, NULL, NULL, 0, NULL, '', NULL, NULL, NULL, NULL FROM generate_series(1, $N)"
}
drain() { # mode
  local mode=$1 flags=() env=() scraper=""
  case $mode in
    metrics|both) flags=(--metrics-addr "127.0.0.1:$METRICS_PORT") ;;
  esac
  case $mode in
    traces|both) env=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT") ;;
  esac
  seed
  local t0 t1 left
  t0=$(date +%s.%N)
  env "${env[@]}" RUST_LOG=info $B --database-url "$URL" process $OPTS "${flags[@]}" >/dev/null 2>"$WORK/$mode.err" &
  local pid=$!
  if [ ${#flags[@]} -gt 0 ]; then
    ( while kill -0 $pid 2>/dev/null; do curl -s -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics"; sleep 1; done ) &
    scraper=$!
  fi
  while :; do
    left=$($PG -d $DB -c "SELECT count(*) FROM background_task")
    [ "$left" = 0 ] && break
    sleep 0.05
  done
  t1=$(date +%s.%N)
  kill -TERM $pid; wait $pid
  [ -n "$scraper" ] && { kill $scraper 2>/dev/null; wait $scraper 2>/dev/null; }
  grep -iE " (error|warn)" "$WORK/$mode.err" | head -3 >&2
  echo "{\"mode\":\"$mode\",\"n\":$N,\"rate\":$(echo "$N / ($t1 - $t0)" | bc -l)}" | tee -a "$WORK/rates.jsonl"
  $PG -d $DB -c "TRUNCATE background_task_completedtask"
}
for r in $(seq 1 "$ROUNDS"); do
  echo "# round $r"
  for mode in plain metrics traces both; do drain $mode; done
done
python3 - "$WORK/rates.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
median = {m: statistics.median(r["rate"] for r in rows if r["mode"] == m) for m in ("plain", "metrics", "traces", "both")}
for mode, rate in median.items():
    print(f"{mode:8} {rate:9.0f} tasks/s  {rate / median['plain']:.3f}x plain")
EOF
$PG -d test -c "DROP DATABASE IF EXISTS $DB"
