#!/usr/bin/env python3
"""Where PostgreSQL spends a task: EXPLAIN (ANALYZE, BUFFERS, WAL) of the
runner's own statements next to the peers' floor statements, on the same
server, without the runner.

On a scratch database (migrated by `bgtasks migrate`, the lean index set
unless DJANGO_INDEXES=1) holding N pending tasks (default 10,000), each
statement runs R times (default 5) inside a transaction that is rolled
back, so every run sees the same table. It prints, per statement, the
median time (planning + execution, no commit: the runner commits its
writes with `synchronous_commit = off`), the rows it touched, the WAL
records and bytes it wrote, and the same per row. The statements are the
ones `src/store/claim.rs`, `src/store/outcome.rs` and
`src/store/enqueue.rs` send (a single enqueue, a bulk enqueue of N, a
claim of 128, the fenced delete and the history insert of an outcome
batch of 128), and the floor's of ../shared/bench/peers/floor (batches of
100 and single inserts into its one-index table `q`).

    python3 benches/explain_pg.py            # needs target/release/bgtasks
    BGTASKS=target/debug/bgtasks N=100000 python3 benches/explain_pg.py

Env: BGTASKS (the binary), PGURL (server, default
postgres://postgres@127.0.0.1:5432), N, R, DJANGO_INDEXES, PEERS_DIR (for
the floor's schema, default ../shared/bench/peers beside the repo).
"""
import json
import os
import statistics
import subprocess
import sys

BGTASKS = os.environ.get("BGTASKS", "target/release/bgtasks")
SERVER = os.environ.get("PGURL", "postgres://postgres@127.0.0.1:5432")
DB = "bench_explain"
N = int(os.environ.get("N", "10000"))
R = int(os.environ.get("R", "5"))
DJANGO = os.environ.get("DJANGO_INDEXES", "0") == "1"
RUNNER = "explain:1:00000000"

COLUMNS = [
    ("task_name", "text"), ("task_params", "text"), ("task_hash", "text"),
    ("verbose_name", "text"), ("priority", "integer"), ("run_at", "timestamptz"),
    ("repeat", "bigint"), ("repeat_until", "timestamptz"), ("queue", "text"),
    ("attempts", "integer"), ("failed_at", "timestamptz"), ("last_error", "text"),
    ("locked_by", "text"), ("locked_at", "timestamptz"),
    ("creator_content_type_id", "integer"), ("creator_object_id", "integer"),
    ("unique_key", "text"), ("policy", "text"), ("cancel_requested_at", "timestamptz"),
    ("trace_context", "text"),
]
NAMES = ", ".join(name for name, _ in COLUMNS)
DEFINITION = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)


def psql(sql, db=DB):
    out = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", f"{SERVER}/{db}"],
        input=sql, capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"explain_pg.py: psql failed: {out.stderr.strip()}")
    return out.stdout


def array_rows(count, first=1):
    """SQL for the one-array-per-column text a bulk enqueue of `count` no-op
    tasks binds (`src/store/pg_array.rs`), one row of `explain_arrays`."""
    values = {
        "task_name": "'noop'", "task_params": "'[[' || i || '], {}]'",
        "task_hash": "md5(i::text) || left(md5('x' || i), 8)", "priority": "0",
        "run_at": "now() - interval '1 second'", "repeat": "0", "attempts": "0",
        "last_error": "''",
    }
    aggregates = ", ".join(
        f"array_agg(({values.get(name, 'NULL')})::{kind})::text" for name, kind in COLUMNS)
    return f"SELECT {aggregates} FROM generate_series({first}, {first + count - 1}) AS i"


ARRAY_TABLE = ", ".join(f"a_{name} text" for name, _ in COLUMNS)
BULK = (f"INSERT INTO background_task ({NAMES}) SELECT * FROM unnest("
        + ", ".join(f"(SELECT a_{name} FROM explain_arrays)::{kind}[]" for name, kind in COLUMNS)
        + ")")
SINGLE = (f"INSERT INTO background_task ({NAMES}) VALUES ('noop', '[[1], {{}}]', "
          "'0123456789abcdef0123456789abcdef01234567', NULL, 0, now(), 0, NULL, NULL, "
          "0, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL) RETURNING *")
DUE = ("SELECT id FROM background_task WHERE locked_by IS NULL AND failed_at IS NULL "
       "AND run_at <= now() AND task_name = ANY('{noop}'::text[]) ORDER BY priority DESC, run_at, id "
       "LIMIT 128 FOR UPDATE SKIP LOCKED")
CLAIM = (f"UPDATE background_task SET locked_by = '{RUNNER}', locked_at = now() "
         f"WHERE id = ANY(ARRAY({DUE})) RETURNING *")
CLAIM_IDS = (f"WITH c AS (UPDATE background_task SET locked_by = '{RUNNER}', "
             f"locked_at = now() WHERE id = ANY(ARRAY({DUE})) RETURNING id) "
             "SELECT string_agg(id::text, ',') AS ids FROM c \\gset\n")
DELETE = (f"DELETE FROM background_task WHERE locked_by = '{RUNNER}' "
          "AND id = ANY(ARRAY[:ids]::int4[]) RETURNING id")
HISTORY_COLUMNS = ("task_name, task_params, task_hash, verbose_name, priority, run_at, "
                   "repeat, repeat_until, queue, attempts, failed_at, last_error, "
                   "locked_by, locked_at, creator_content_type_id, creator_object_id")
HISTORY = (f"INSERT INTO background_task_completedtask ({HISTORY_COLUMNS}) "
           f"SELECT task_name, task_params, task_hash, verbose_name, priority, run_at, "
           f"repeat, repeat_until, queue, 1, NULL, '', locked_by, locked_at, NULL, NULL "
           f"FROM background_task WHERE id IN (:ids) RETURNING id")
FLOOR_CLAIM = ("UPDATE q SET locked_at = now(), locked_by = 1, attempts = attempts + 1 "
               "WHERE id IN (SELECT id FROM q WHERE queue = 'default' AND locked_at IS NULL "
               "AND run_at <= now() ORDER BY run_at, id FOR UPDATE SKIP LOCKED LIMIT 100) "
               "RETURNING id")
FLOOR_CLAIM_IDS = f"WITH c AS ({FLOOR_CLAIM}) SELECT string_agg(id::text, ',') AS ids FROM c \\gset\n"

# name, rows it writes, statement explained, what runs before it in the
# same transaction
CASES = [
    ("ours: single enqueue (INSERT ... RETURNING *, NOTIFY trigger)", 1, SINGLE, ""),
    ("floor: single enqueue (INSERT INTO q)", 1, "INSERT INTO q (payload) VALUES ('{}')", ""),
    (f"ours: bulk enqueue of {N} (unnest of one array per column)", N, BULK, ""),
    (f"floor: bulk enqueue of {N} (INSERT ... generate_series)", N,
     f"INSERT INTO q (payload) SELECT '{{}}' FROM generate_series(1, {N})", ""),
    ("ours: claim of 128 (UPDATE ... id = ANY(ARRAY(locking select)) RETURNING *)", 128,
     CLAIM, ""),
    ("floor: claim of 100", 100, FLOOR_CLAIM, ""),
    ("ours: outcome, fenced delete of 128", 128, DELETE, CLAIM_IDS),
    ("ours: outcome, history insert of 128", 128, HISTORY, CLAIM_IDS),
    ("floor: delete of 100", 100, "DELETE FROM q WHERE id IN (:ids)", FLOOR_CLAIM_IDS),
]


def setup():
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    migrate = [BGTASKS, "--database-url", f"{SERVER}/{DB}", "migrate"]
    if DJANGO:
        migrate.append("--django-indexes")
    subprocess.run(migrate, check=True, capture_output=True)
    peers = os.environ.get(
        "PEERS_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench", "peers"))
    with open(os.path.join(peers, "floor", "schema.sql")) as schema:
        floor_schema = schema.read()
    psql(floor_schema + f"""
        INSERT INTO q (payload) SELECT '{{}}' FROM generate_series(1, {N});
        CREATE TABLE explain_arrays ({ARRAY_TABLE});
        INSERT INTO explain_arrays {array_rows(N)};
        {BULK};
        TRUNCATE explain_arrays;
        INSERT INTO explain_arrays {array_rows(N, N + 1)};
        VACUUM ANALYZE;""")


def explain(statement, before):
    """R + 1 runs in one session (as a runner's connection runs them); the
    first, which pays the session's first-call costs, is dropped."""
    run = f"BEGIN;\n{before}EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) {statement};\nROLLBACK;\n"
    plans = [line for line in psql(run * (R + 1)).splitlines() if line.strip()]
    decoder = json.JSONDecoder()
    text = "\n".join(plans)
    runs, at = [], 0
    while at < len(text):
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            break
        value, at = decoder.raw_decode(text, at)
        top = value[0]
        node = top["Plan"]
        runs.append({
            "ms": top["Planning Time"] + top["Execution Time"],
            "triggers_ms": sum(t.get("Time", 0.0) for t in top.get("Triggers", [])),
            "wal_records": node.get("WAL Records", 0),
            "wal_bytes": node.get("WAL Bytes", 0),
        })
    return runs[1:]


def main():
    setup()
    server = psql("SHOW server_version", db="postgres").strip()
    print(f"PostgreSQL {server}; {N} pending tasks; "
          f"{'Django' if DJANGO else 'lean'} index set; medians of {R} runs in one session, rolled back, after one more")
    print(f"{'statement':<78} {'ms':>8} {'rows':>6} {'WAL rec':>8} {'WAL B':>9} "
          f"{'µs/row':>7} {'rec/row':>7} {'B/row':>6}")
    for name, rows, statement, before in CASES:
        runs = explain(statement, before)
        ms = statistics.median(r["ms"] for r in runs)
        last = runs[-1]
        print(f"{name:<78} {ms:8.2f} {rows:6d} {last['wal_records']:8d} "
              f"{last['wal_bytes']:9d} {1000 * ms / rows:7.1f} "
              f"{last['wal_records'] / rows:7.1f} {last['wal_bytes'] / rows:6.0f}"
              + (f"  (triggers {statistics.median(r['triggers_ms'] for r in runs):.3f} ms)"
                 if any(r["triggers_ms"] for r in runs) else ""))
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


if __name__ == "__main__":
    main()
