#!/usr/bin/env python3
"""The comparison table, from the JSON lines that benches/compare.sh saved.

Usage: python3 benches/compare.py [RESULTS_DIR]   (default target/compare/results)

Reads the peers' files (floor, graphile-worker, rust-apalis,
django-background-tasks, idle_check: *.jsonl as the peers' scripts print
them) and ours (ours-<backend>.jsonl from `cargo bench --bench measure`,
ours-floor-mariadb.jsonl). When a figure was measured several times, the
median is used. Prints every target with the measured ratio and PASS/MISS,
then each peer figure beside ours, then all of our figures.
"""
import glob
import json
import os
import statistics
import sys

RESULTS = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RESULTS", "target/compare/results")


def lines(name):
    """The JSON objects of RESULTS/name (other lines, e.g. version banners, are skipped)."""
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def med(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


class Fig:
    """A figure: the median of its runs, and how many runs and their spread."""

    def __init__(self, values, unit):
        self.values = [v for v in values if isinstance(v, (int, float))]
        self.unit = unit
        self.value = med(self.values)

    def __bool__(self):
        return self.value is not None

    def text(self):
        if self.value is None:
            return "n/a"
        s = fmt(self.value, self.unit)
        if len(self.values) > 1:
            s += f" (med of {len(self.values)}: {fmt(min(self.values), '')}..{fmt(max(self.values), '')})"
        return s


def fmt(v, unit):
    if v is None:
        return "n/a"
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:,.1f}"
    else:
        s = f"{v:,.2f}"
    return f"{s} {unit}".rstrip()


# ------------------------------------------------------------------ peers

floor = lines("floor.jsonl")
gw = lines("graphile-worker.jsonl")
apalis = lines("rust-apalis.jsonl")
dbt = lines("django-background-tasks.jsonl")
idle_check = lines("idle_check.jsonl")


def floor_fig(rows, name, k, clients, key):
    return Fig([d[key] for d in rows if d.get("floor") == name and d.get("k") == k and d.get("clients") == clients], "/s")


def with_preceding_enqueue(rows):
    """(row, metric of the enqueue before it) pairs, as the peers' summarize.py tracks them."""
    last = None
    for d in rows:
        m = d.get("metric", "")
        if m.startswith("enqueue"):
            last = m
        yield d, last


def gw_process():
    # concurrency 10 after enqueue / enqueue_bulk; not the quickAddJob (n=500) nor the concurrency-1 run.
    return Fig([d["rate"] for d, prev in with_preceding_enqueue(gw)
                if d.get("metric") == "process" and d.get("concurrency") == 10 and prev in ("enqueue", "enqueue_bulk")], "/s")


def metric(rows, name, key="rate", **match):
    return Fig([d.get(key) for d in rows if d.get("metric") == name and all(d.get(k) == v for k, v in match.items())],
               "ms" if key.endswith("_ms") else "/s")


peer = {
    "gw_enqueue": metric(gw, "enqueue"),
    "gw_bulk": metric(gw, "enqueue_bulk"),
    "gw_process": gw_process(),
    "gw_latency": metric(gw, "latency", "median_ms"),
    "ap_enqueue": metric(apalis, "enqueue"),
    "ap_bulk": metric(apalis, "enqueue_bulk"),
    "ap_process": metric(apalis, "process"),
    "ap_latency_poll": metric(apalis, "latency", "median_ms", mode="poll"),
    "ap_latency_pubsub": metric(apalis, "latency", "median_ms", mode="pubsub"),
    "ap_latency_x_pubsub": Fig([d.get("median_ms") for d in apalis if d.get("crossproc_latency") == "apalis-pubsub"], "ms"),
    "ap_latency_x_poll": Fig([d.get("median_ms") for d in apalis if d.get("crossproc_latency") == "apalis-poll"], "ms"),
    "dbt_sqlite_process": Fig([d.get("rate") for d in dbt if d.get("peer") == "dbt/sqlite/async=0" and d.get("metric") == "process_cmd"], "/s"),
    "dbt_pg_process": Fig([d.get("rate") for d in dbt if d.get("peer") == "dbt/pg/async=0" and d.get("metric") == "process_cmd"], "/s"),
    "dbt_sqlite_latency": Fig([d.get("median_ms") for d in dbt if d.get("peer") == "dbt/sqlite/async=0" and d.get("metric") == "latency_sleep0.1"], "ms"),
    "dbt_pg_latency": Fig([d.get("median_ms") for d in dbt if d.get("peer") == "dbt/pg/async=0" and d.get("metric") == "latency_sleep0.1"], "ms"),
    "pg_floor_k1_enq": floor_fig(floor, "pg", 1, 1, "enqueue_per_s"),
    "pg_floor_k1_proc": floor_fig(floor, "pg", 1, 1, "process_per_s"),
    "pg_floor_c4_enq": floor_fig(floor, "pg", 1, 4, "enqueue_per_s"),
    "pg_floor_c4_proc": floor_fig(floor, "pg", 1, 4, "process_per_s"),
    "pg_floor_k100_enq": floor_fig(floor, "pg", 100, 1, "enqueue_per_s"),
    "pg_floor_k100_proc": floor_fig(floor, "pg", 100, 1, "process_per_s"),
    "sq_floor_k1_enq": floor_fig(floor, "sqlite-wal-normal", 1, 1, "enqueue_per_s"),
    "sq_floor_k1_proc": floor_fig(floor, "sqlite-wal-normal", 1, 1, "process_per_s"),
    "sq_floor_k100_enq": floor_fig(floor, "sqlite-wal-normal", 100, 1, "enqueue_per_s"),
    "sq_floor_k100_proc": floor_fig(floor, "sqlite-wal-normal", 100, 1, "process_per_s"),
}
# idle_check.sh prints, in order: apalis (poll), apalis (pubsub), graphile-worker, django-background-tasks.
idle_names = {"bench_gw": ["graphile-worker"], "bench_dbt": ["django-background-tasks (--sleep 0.1)"],
              "bench_apalis": ["apalis (poll)", "apalis (pubsub)"]}
idle_peer = []
seen = {}
for d in idle_check:
    db = d.get("idle_check")
    i = seen.get(db, 0)
    seen[db] = i + 1
    names = idle_names.get(db, [db])
    idle_peer.append((names[min(i, len(names) - 1)], d.get("xacts_per_s")))

# MariaDB floor (ours: measure floor)
my_floor_rows = lines("ours-floor-mariadb.jsonl")
my_floor_name = next((d["floor"] for d in my_floor_rows if "floor" in d), "mariadb")
peer["my_floor_k1_enq"] = floor_fig(my_floor_rows, my_floor_name, 1, 1, "enqueue_per_s")
peer["my_floor_k1_proc"] = floor_fig(my_floor_rows, my_floor_name, 1, 1, "process_per_s")
peer["my_floor_k100_enq"] = floor_fig(my_floor_rows, my_floor_name, 100, 1, "enqueue_per_s")
peer["my_floor_k100_proc"] = floor_fig(my_floor_rows, my_floor_name, 100, 1, "process_per_s")

# ------------------------------------------------------------------ ours

ours = {}
for be in ("sqlite", "postgres", "mariadb"):
    every = [d for d in lines(f"ours-{be}.jsonl") if d.get("peer") == "background-tasks"]
    # Django's full index set is measured on its own; every other figure is
    # the lean set's (a database without Django).
    rows = [d for d in every if d.get("indexes", "lean") == "lean"]
    django_rows = [d for d in every if d.get("indexes") == "django"]
    plain = [d for d in rows if d.get("metric") != "process" or d.get("depth", 0) <= d.get("n", 0)]
    backlog = [d for d in rows if d.get("metric") == "process" and d.get("depth", 0) > d.get("n", 0)]
    first = [d for d in backlog if d.get("window") == 1]
    o = {
        "enqueue": metric(rows, "enqueue"),
        "django_enqueue": metric(django_rows, "enqueue"),
        "django_bulk": metric(django_rows, "enqueue_bulk"),
        "django_process": metric(django_rows, "process"),
        "bulk": metric(rows, "enqueue_bulk"),
        "process": metric(plain, "process"),
        "process_backlog": Fig([d["rate"] for d in backlog], "/s"),
        "process_n": next((d.get("depth") for d in plain if d.get("metric") == "process"), None),
        "backlog_depth": first[0]["depth"] if first else None,
        "backlog_windows": [(d.get("window"), d.get("depth"), d.get("rate")) for d in backlog],
        "lat_same": metric(rows, "latency", "median_ms", mode="same-process"),
        "lat_cross": metric(rows, "latency", "median_ms", mode="cross-process"),
        "lat_rows": [d for d in rows if d.get("metric") == "latency"],
        "rss": next((d for d in rows if d.get("metric") == "rss"), None),
        "idle": next((d for d in rows if d.get("metric") == "idle_qps"), None),
    }
    ours[be] = o

# ------------------------------------------------------------------ the binary, from outside

bb_pg_default = lines("blackbox-pg-default.jsonl")
bb_pg_batched = lines("blackbox-pg-batched.jsonl")
bb_sqlite = lines("blackbox-sqlite.jsonl")
cli = lines("cli.jsonl")
bb = {
    "pg_default": Fig([d["rate"] for d in bb_pg_default if d.get("peer") == "ours"], "/s"),
    "gw_default": Fig([d["rate"] for d in bb_pg_default if d.get("peer") == "graphile-worker" and d.get("metric") == "process"], "/s"),
    "pg_batched": Fig([d["rate"] for d in bb_pg_batched if d.get("peer") == "ours"], "/s"),
    "gw_10": Fig([d["rate"] for d in bb_pg_batched if d.get("peer") == "graphile-worker" and d.get("metric") == "process"], "/s"),
    "sqlite_default": Fig([d["rate"] for d in bb_sqlite if "--prefetch 0" not in d.get("opts", "")], "/s"),
    "sqlite_prefetch0": Fig([d["rate"] for d in bb_sqlite if "--prefetch 0" in d.get("opts", "")], "/s"),
}
for tls, params in (("tls", ""), ("plain", "?sslmode=disable")):
    calls = [d for d in cli if d.get("metric") == "cli_call" and d.get("params") == params]
    bulks = [d for d in cli if d.get("metric") == "cli_bulk" and d.get("params") == params]
    bb[f"cli_call_{tls}"] = Fig([d["ours_ms"] for d in calls], "ms")
    bb[f"psql_call_{tls}"] = Fig([d["psql_ms"] for d in calls], "ms")
    bb[f"cli_file_{tls}"] = Fig([d["file"] for d in bulks], "/s")
    bb[f"cli_atomic_{tls}"] = Fig([d["atomic"] for d in bulks], "/s")
    bb[f"cli_floor_{tls}"] = Fig([d["floor"] for d in bulks], "/s")

# ------------------------------------------------------------------ targets

out = []
p = out.append


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    p(line(header))
    p("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        p(line(r))


def ratio(a, b):
    if not a or not b or not b.value or a.value is None:
        return None
    return a.value / b.value


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


targets = []


def at_least_ratio(name, ours_fig, ref_name, ref_fig, want):
    r = ratio(ours_fig, ref_fig)
    targets.append([name, ours_fig.text(), f"{ref_name}: {ref_fig.text()}",
                    "n/a" if r is None else f"{r:,.2f}x", f">= {want:g}x", verdict(None if r is None else r >= want)])


def at_most(name, fig, limit, unit="ms"):
    v = fig.value if fig else None
    targets.append([name, fig.text() if fig else "n/a", "-", "-", f"<= {limit:g} {unit}",
                    verdict(None if v is None else v <= limit)])


pg, sq, my = ours["postgres"], ours["sqlite"], ours["mariadb"]
at_least_ratio("PG process throughput vs graphile-worker", pg["process"], "graphile-worker process", peer["gw_process"], 5)
at_least_ratio("PG process throughput vs PG floor (k=100)", pg["process"], "PG floor k=100 process", peer["pg_floor_k100_proc"], 0.50)
v = sq["process"].value
sq_floor = lines("sqlite-floor.jsonl")
floor_full = Fig([d["rate"] for d in sq_floor if d.get("indexes") == "lean" and d.get("synchronous") == "FULL" and d.get("batch") == 128], "/s")
targets.append(["SQLite process throughput", sq["process"].text(),
                f"floor of its statements, FULL, batches of 128: {floor_full.text()}",
                "n/a" if not floor_full or v is None else f"{v / floor_full.value:,.2f}x of floor",
                ">= 40,000 /s", verdict(None if v is None else v >= 40000)])
for d in sq_floor:
    targets.append([f"SQLite floor of the runner's statements ({d.get('indexes')} indexes, synchronous {d.get('synchronous')}, batches of {d.get('batch')})",
                    fmt(d.get("rate"), "/s"), "sqlite3 shell, no runner", "-", "report only", "-"])
at_least_ratio("SQLite process vs django-background-tasks (SQLite)", sq["process"], "dbt process_tasks", peer["dbt_sqlite_process"], 2500)
at_least_ratio("MariaDB process throughput vs MariaDB floor (k=100)", my["process"], "MariaDB floor k=100 process", peer["my_floor_k100_proc"], 0.50)
at_least_ratio("PG bulk enqueue vs graphile-worker addJobs", pg["bulk"], "graphile-worker enqueue_bulk", peer["gw_bulk"], 1.5)
at_least_ratio("PG single enqueue vs PG floor (k=1, 1 client)", pg["enqueue"], "PG floor k=1 enqueue", peer["pg_floor_k1_enq"], 0.90)
for be, o in (("PG", pg), ("SQLite", sq), ("MariaDB", my)):
    if be == "PG":
        at_most("Pickup latency, same process (PG)", o["lat_same"], 1)
        at_most("Pickup latency, cross-process (PG)", o["lat_cross"], 2)
    elif be == "SQLite":
        at_most("Pickup latency, same process (SQLite)", o["lat_same"], 1)
        at_most("Pickup latency, cross-process (SQLite)", o["lat_cross"], 10)
    else:
        at_most("Pickup latency, cross-process (MariaDB)", o["lat_cross"], 5)
for be, o in (("SQLite", sq), ("PG", pg)):
    depth = o["backlog_depth"]
    label = f"{depth:,}" if depth else "1,000,000"
    base = f"{o['process_n']:,}" if o["process_n"] else "10,000"
    at_least_ratio(f"{be} throughput with {label} pending vs with {base}", o["process_backlog"],
                   f"process with {base} pending", o["process"], 0.90)
at_least_ratio("PG default `bgtasks process` vs graphile-worker default (black box)", bb["pg_default"],
               "graphile-worker concurrency 1", bb["gw_default"], 1.0)
# The binary as users run it (default logging to stderr), against the
# same targets as the in-process runner.
at_least_ratio("PG `bgtasks process --threads 2 --tasks-per-thread 64` vs graphile-worker concurrency 10 (black box)",
               bb["pg_batched"], "graphile-worker concurrency 10", bb["gw_10"], 5)
at_least_ratio("PG `bgtasks process --threads 2 --tasks-per-thread 64` vs PG floor (k=100) (black box)",
               bb["pg_batched"], "PG floor k=100 process", peer["pg_floor_k100_proc"], 0.50)
v = bb["sqlite_default"].value
targets.append(["SQLite default `bgtasks process` (black box)", bb["sqlite_default"].text(), "-", "-", ">= 40,000 /s",
                verdict(None if v is None else v >= 40000)])
v = bb["cli_file_tls"].value
targets.append(["PG `bgtasks enqueue --from FILE` (default sslmode)", bb["cli_file_tls"].text(),
                f"SQL floor: {bb['cli_floor_tls'].text()}", "-", ">= 20,000 /s", verdict(None if v is None else v >= 20000)])
r = ratio(bb["cli_call_tls"], bb["psql_call_tls"])
targets.append(["PG one `bgtasks enqueue` vs `psql -c 'select 1'` (default sslmode)", bb["cli_call_tls"].text(),
                f"psql: {bb['psql_call_tls'].text()}", "n/a" if r is None else f"{r:,.2f}x", "report only", "-"])
rss = sq["rss"]
if rss:
    mx, a10, a90 = rss.get("max_mb"), rss.get("at10_mb"), rss.get("at90_mb")
    targets.append([f"Runner RSS while processing {rss['n']:,} (SQLite)", f"max {fmt(mx, 'MB')}", "-", "-", "<= 40 MB",
                    verdict(None if mx is None else mx <= 40)])
    growth = None if not a10 or a90 is None else a90 / a10
    targets.append(["Runner RSS flat (at 90 % / at 10 % of the drain)", f"{fmt(a10, 'MB')} -> {fmt(a90, 'MB')}", "-",
                    "n/a" if growth is None else f"{growth:.2f}x", "<= 1.10x", verdict(None if growth is None else growth <= 1.10)])
else:
    targets.append(["Runner RSS while processing (SQLite)", "n/a", "-", "-", "<= 40 MB", "n/a"])
gw_idle = next((rate for name, rate in idle_peer if name == "graphile-worker"), None)
for be, o in (("PG", pg), ("MariaDB", my), ("SQLite", sq)):
    d = o["idle"]
    if d and d.get("measured"):
        ref = f"graphile-worker: {gw_idle:g} /s" if gw_idle is not None else d.get("counter", "")
        r = f"{d['rate'] / gw_idle:,.2f}x" if gw_idle else "-"
        targets.append([f"Idle runner statements/s ({be}; {d.get('counter', '')})", f"{d['rate']:g} /s", ref, r, "report only", "-"])
    elif d:
        targets.append([f"Idle runner statements/s ({be})", "not measured", d.get("note", ""), "-", "report only", "-"])
# The index sets: the lean set (no Django app) against Django's full set,
# same run, same N.
for be, o in (("PG", pg), ("SQLite", sq), ("MariaDB", my)):
    for what, lean, django in (("process", o["process"], o["django_process"]),
                               ("single enqueue", o["enqueue"], o["django_enqueue"]),
                               ("bulk enqueue", o["bulk"], o["django_bulk"])):
        if django:
            r = ratio(lean, django)
            targets.append([f"{be} {what}: lean index set vs Django's", lean.text(), f"Django's set: {django.text()}",
                            "n/a" if r is None else f"{r:,.2f}x", "report only", "-"])

p(f"# background-tasks against its peers (results: {os.path.abspath(RESULTS)})")
try:
    meta = json.load(open(os.path.join(RESULTS, "meta.json")))
    p("")
    p(f"Run of {meta.get('date')} at {meta.get('commit')} on {meta.get('cores')} cores"
      f"{' (QUICK)' if meta.get('quick') == 1 else ''}{'; peers reused from an earlier run' if meta.get('skip_peers') == 1 else ''}: "
      f"PostgreSQL {meta.get('postgres')}, MariaDB {meta.get('mariadb')}, SQLite {meta.get('sqlite')}; "
      f"peers N={meta.get('peer_n')}, runs={meta.get('runs')}; ours process N={meta.get('process_n')}, "
      f"enqueue N={meta.get('enqueue_n')}, latency reps={meta.get('latency_reps')}, backlog={meta.get('backlog'):,}, "
      f"RSS over {meta.get('rss_n'):,}, idle {meta.get('idle_secs')} s")
except (OSError, ValueError, TypeError):
    pass
p("")
p("## Targets")
p("")
table(["target", "ours", "reference", "ratio", "target", "result"], targets)
passed = sum(1 for t in targets if t[-1] == "PASS")
missed = sum(1 for t in targets if t[-1] == "MISS")
na = sum(1 for t in targets if t[-1] == "n/a")
p("")
p(f"{passed} PASS, {missed} MISS, {na} not measured")

# ------------------------------------------------------------------ peers vs ours

p("")
p("## Peers' figures beside ours (ratio = ours / peer; for latency, peer / ours: above 1 is better for us)")
p("")
rows = []


def vs(peer_name, backend, what, pfig, ofig, lower_better=False):
    r = None
    if pfig and ofig and pfig.value and ofig.value:
        r = pfig.value / ofig.value if lower_better else ofig.value / pfig.value
    rows.append([peer_name, backend, what, pfig.text() if pfig is not None else "n/a",
                 ofig.text() if ofig is not None else "n/a", "n/a" if r is None else f"{r:,.2f}x"])


vs("graphile-worker", "postgres", "process /s", peer["gw_process"], pg["process"])
vs("graphile-worker", "postgres", "enqueue one at a time /s", peer["gw_enqueue"], pg["enqueue"])
vs("graphile-worker", "postgres", "bulk enqueue (addJobs) /s", peer["gw_bulk"], pg["bulk"])
vs("graphile-worker", "postgres", "pickup latency ms (same process)", peer["gw_latency"], pg["lat_same"], True)
vs("apalis", "postgres", "process /s", peer["ap_process"], pg["process"])
vs("apalis", "postgres", "enqueue one at a time /s", peer["ap_enqueue"], pg["enqueue"])
vs("apalis", "postgres", "bulk enqueue /s", peer["ap_bulk"], pg["bulk"])
vs("apalis", "postgres", "latency ms same process (poll)", peer["ap_latency_poll"], pg["lat_same"], True)
vs("apalis", "postgres", "latency ms same process (pubsub)", peer["ap_latency_pubsub"], pg["lat_same"], True)
vs("apalis", "postgres", "latency ms cross-process (pubsub)", peer["ap_latency_x_pubsub"], pg["lat_cross"], True)
vs("apalis", "postgres", "latency ms cross-process (poll)", peer["ap_latency_x_poll"], pg["lat_cross"], True)
vs("django-background-tasks", "sqlite", "process /s (process_tasks --sleep 0.1)", peer["dbt_sqlite_process"], sq["process"])
vs("django-background-tasks", "postgres", "process /s (process_tasks --sleep 0.1)", peer["dbt_pg_process"], pg["process"])
vs("django-background-tasks", "sqlite", "latency ms cross-process (--sleep 0.1)", peer["dbt_sqlite_latency"], sq["lat_cross"], True)
vs("django-background-tasks", "postgres", "latency ms cross-process (--sleep 0.1)", peer["dbt_pg_latency"], pg["lat_cross"], True)
vs("SQL floor k=1, 1 client", "postgres", "enqueue /s", peer["pg_floor_k1_enq"], pg["enqueue"])
vs("SQL floor k=1, 1 client", "postgres", "process /s", peer["pg_floor_k1_proc"], pg["process"])
vs("SQL floor k=1, 4 clients", "postgres", "enqueue /s", peer["pg_floor_c4_enq"], pg["enqueue"])
vs("SQL floor k=1, 4 clients", "postgres", "process /s", peer["pg_floor_c4_proc"], pg["process"])
vs("SQL floor k=100", "postgres", "enqueue /s (vs our bulk)", peer["pg_floor_k100_enq"], pg["bulk"])
vs("SQL floor k=100", "postgres", "process /s", peer["pg_floor_k100_proc"], pg["process"])
vs("SQL floor k=1 (WAL, sync NORMAL)", "sqlite", "enqueue /s", peer["sq_floor_k1_enq"], sq["enqueue"])
vs("SQL floor k=1 (WAL, sync NORMAL)", "sqlite", "process /s", peer["sq_floor_k1_proc"], sq["process"])
vs("SQL floor k=100 (WAL, sync NORMAL)", "sqlite", "enqueue /s (vs our bulk)", peer["sq_floor_k100_enq"], sq["bulk"])
vs("SQL floor k=100 (WAL, sync NORMAL)", "sqlite", "process /s", peer["sq_floor_k100_proc"], sq["process"])
vs(f"SQL floor k=1 ({my_floor_name})", "mariadb", "enqueue /s", peer["my_floor_k1_enq"], my["enqueue"])
vs(f"SQL floor k=1 ({my_floor_name})", "mariadb", "process /s", peer["my_floor_k1_proc"], my["process"])
vs(f"SQL floor k=100 ({my_floor_name})", "mariadb", "enqueue /s (vs our bulk)", peer["my_floor_k100_enq"], my["bulk"])
vs(f"SQL floor k=100 ({my_floor_name})", "mariadb", "process /s", peer["my_floor_k100_proc"], my["process"])
vs("graphile-worker (default, concurrency 1)", "postgres", "black box: default `bgtasks process --sleep 1` /s",
   bb["gw_default"], bb["pg_default"])
vs("graphile-worker (concurrency 10)", "postgres", "black box: `process --threads 2 --tasks-per-thread 64` /s",
   bb["gw_10"], bb["pg_batched"])
vs("psql -c 'select 1' (default sslmode)", "postgres", "one command, ms", bb["psql_call_tls"], bb["cli_call_tls"], True)
vs("psql -c 'select 1' (sslmode=disable)", "postgres", "one command, ms", bb["psql_call_plain"], bb["cli_call_plain"], True)
vs("SQL floor: INSERT ... generate_series (default sslmode)", "postgres", "`enqueue --from FILE` /s",
   bb["cli_floor_tls"], bb["cli_file_tls"])
vs("SQL floor: INSERT ... generate_series (default sslmode)", "postgres", "`enqueue --from FILE --atomic` /s",
   bb["cli_floor_tls"], bb["cli_atomic_tls"])
vs("SQL floor: INSERT ... generate_series (sslmode=disable)", "postgres", "`enqueue --from FILE` /s",
   bb["cli_floor_plain"], bb["cli_file_plain"])
table(["peer", "backend", "figure", "peer", "ours", "ratio"], rows)
if idle_peer:
    p("")
    p("Idle workers (peers' idle_check.sh, PostgreSQL transactions/s): "
      + "; ".join(f"{n} {fmt(v, '/s')}" for n, v in idle_peer)
      + f"; ours {fmt(pg['idle'].get('rate') if pg['idle'] else None, '/s')}")

# ------------------------------------------------------------------ ours

p("")
p("## Our figures")
p("")
rows = []
for be in ("sqlite", "postgres", "mariadb"):
    o = ours[be]
    rows.append([be, "enqueue one at a time", o["enqueue"].text()])
    rows.append([be, "bulk enqueue (enqueue_many)", o["bulk"].text()])
    rows.append([be, "process (in-process runner)", o["process"].text()])
    for w, depth, rate in o["backlog_windows"]:
        rows.append([be, f"process, window {w}, {depth:,} pending at its start", fmt(rate, "/s")])
    for d in o["lat_rows"]:
        rows.append([be, f"pickup latency {d.get('mode')} ({d.get('reps')} reps)",
                     f"median {fmt(d.get('median_ms'), 'ms')}, p90 {fmt(d.get('p90_ms'), 'ms')}, "
                     f"min {fmt(d.get('min_ms'), 'ms')}, max {fmt(d.get('max_ms'), 'ms')}; "
                     f"done {fmt(d.get('done_median_ms'), 'ms')}"
                     + (f"; the enqueue call alone {fmt(d['enqueue_median_ms'], 'ms')}"
                        if d.get("enqueue_median_ms") is not None else "")])
    if o["rss"]:
        d = o["rss"]
        rows.append([be, f"child runner RSS over {d['n']:,} tasks",
                     f"max {fmt(d.get('max_mb'), 'MB')}; at 10/50/90 %: {fmt(d.get('at10_mb'), '')} / "
                     f"{fmt(d.get('at50_mb'), '')} / {fmt(d.get('at90_mb'), 'MB')}; drained at {fmt(d.get('rate'), '/s')}"])
    if o["idle"]:
        d = o["idle"]
        if not d.get("measured"):
            text = "not measured"
        elif d.get("baseline_rate") is not None:
            text = (f"{d['rate']:g} /s over {d['secs']} s ({d.get('gross_rate'):g} /s server-wide with the runner, "
                    f"{d.get('baseline_rate'):g} /s without)")
        else:
            text = f"{d['rate']:g} /s over {d['secs']} s"
        rows.append([be, "idle runner", text])
rows.append(["sqlite", "black box: default `bgtasks process --sleep 1`", bb["sqlite_default"].text()])
rows.append(["sqlite", "black box: `bgtasks process --sleep 1 --prefetch 0` (the seed's rhythm)", bb["sqlite_prefetch0"].text()])
table(["backend", "figure", "value"], rows)
p("")
p("Notes: no-op tasks; rates are tasks/s; 'med of n' is the median of n runs. Our process figures run an in-process")
p("runner (2 executor threads x 64 tasks each) from start until N tasks finished; the peers' process figures are their")
p("own scripts' (graphile-worker concurrency 10, apalis default, django-background-tasks process_tasks --sleep 0.1).")
p("Our SQLite runs with synchronous=FULL; the SQLite floor with synchronous=NORMAL.")

print("\n".join(out))
