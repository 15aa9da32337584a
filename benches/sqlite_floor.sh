#!/usr/bin/env bash
# The floor of SQLite for the runner's own statements, without the runner:
# the sqlite3 shell runs, on the schema `bgtasks migrate` creates (the lean
# index set, or Django's with DJANGO_INDEXES=1), the statements a runner
# makes per batch of B tasks: the claim (BEGIN IMMEDIATE; UPDATE ... WHERE
# id IN (the claim-ordered SELECT ... LIMIT B) RETURNING *; COMMIT), then
# the outcome batch (BEGIN IMMEDIATE; INSERT of the history rows; DELETE;
# COMMIT). Prints one JSON line per batch size and synchronous setting.
#
#   BGTASKS=target/release/bgtasks N=40000 bash benches/sqlite_floor.sh
#
# Env: BGTASKS (the binary, for `migrate`), N (tasks, default 40000),
# BATCHES (default "128 512"), SYNCS (default "FULL NORMAL"), DIR (scratch
# folder, default target/compare), DJANGO_INDEXES (1: Django's index set).
set -euo pipefail
B=${BGTASKS:-target/release/bgtasks}
N=${N:-40000}
DIR=${DIR:-target/compare}
mkdir -p "$DIR"
DB=$DIR/floor.sqlite3
SET=lean
MIGRATE=(migrate)
if [ "${DJANGO_INDEXES:-0}" = 1 ]; then SET=django; MIGRATE=(migrate --django-indexes); fi
COLS="task_name, task_params, task_hash, verbose_name, priority, run_at, repeat, repeat_until, queue, attempts, failed_at, last_error, locked_by, locked_at, creator_content_type_id, creator_object_id"
for sync in ${SYNCS:-FULL NORMAL}; do
  for batch in ${BATCHES:-128 512}; do
    rm -f "$DB"*
    "$B" --database-url "sqlite://$DB?mode=rwc" "${MIGRATE[@]}" >/dev/null 2>&1
    sqlite3 "$DB" "PRAGMA journal_mode = WAL;" >/dev/null
    sqlite3 "$DB" "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
      INSERT INTO background_task ($COLS)
      SELECT 'noop', '[[' || i || '], {}]', lower(hex(randomblob(20))), NULL, 0,
             '2026-01-01 00:00:00.000000', 0, NULL, NULL, 0, NULL, '', NULL, NULL, NULL, NULL FROM n;"
    SCRIPT=$DIR/floor.sql
    {
      echo "PRAGMA synchronous = $sync; PRAGMA busy_timeout = 30000;"
      for _ in $(seq 1 $(( (N + batch - 1) / batch ))); do
        echo "BEGIN IMMEDIATE;
UPDATE background_task SET locked_by = 'floor:1:x', locked_at = '2026-01-02 00:00:00.000000'
 WHERE id IN (SELECT id FROM background_task INDEXED BY background_task_claim_idx
  WHERE locked_by IS NULL AND failed_at IS NULL AND run_at <= '2026-01-02 00:00:00.000000'
  AND task_name IN ('noop') ORDER BY priority DESC, run_at, id LIMIT $batch) RETURNING *;
COMMIT;
BEGIN IMMEDIATE;
INSERT INTO background_task_completedtask ($COLS)
 SELECT task_name, task_params, task_hash, verbose_name, priority, '2026-01-02 00:00:00.000001', repeat,
  repeat_until, queue, 1, NULL, '', locked_by, locked_at, creator_content_type_id, creator_object_id
 FROM background_task WHERE locked_by = 'floor:1:x';
DELETE FROM background_task WHERE locked_by = 'floor:1:x';
COMMIT;"
      done
    } >"$SCRIPT"
    t0=$(date +%s.%N)
    sqlite3 "$DB" <"$SCRIPT" >/dev/null
    t1=$(date +%s.%N)
    left=$(sqlite3 "$DB" "SELECT COUNT(*) FROM background_task")
    done_=$(sqlite3 "$DB" "SELECT COUNT(*) FROM background_task_completedtask")
    echo "{\"floor\":\"sqlite-runner-statements\",\"indexes\":\"$SET\",\"synchronous\":\"$sync\",\"batch\":$batch,\"n\":$done_,\"left\":$left,\"rate\":$(echo "$done_ / ($t1 - $t0)" | bc -l | xargs printf '%.0f')}"
  done
done
rm -f "$DB"* "$SCRIPT"
