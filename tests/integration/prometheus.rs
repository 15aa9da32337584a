//! The runners' metrics as a real Prometheus sees them: Debian's
//! `prometheus` scrapes two `bgtasks process` runners, and its HTTP query
//! API must agree with the database; the alert rules in `contrib/` load in
//! it and pass `promtool`; the Grafana dashboard asks only for metrics the
//! runners serve.
//!
//! `scripts/install-prometheus.sh` installs `prometheus` and `promtool`
//! (`BGTASKS_PROMETHEUS` and `BGTASKS_PROMTOOL` point elsewhere), and
//! `.ci/run` runs it before the tests, so under `CI=true` a missing binary
//! fails the test; elsewhere the test says on stderr that it is skipped.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use background_tasks::{builtin, completed_task};
use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::Value;

use crate::cli::queue;
use crate::fixture::{TestDb, wait_for};
use crate::fleet::{Process, free_port, http_get, scrape};

on_all_backends!(prometheus_agrees_with_the_database);

/// How many tasks the runners share.
const TASKS: u64 = 600;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

/// The binaries, or `None` (skipped) when they are missing outside CI.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, default: &str| {
        PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
    };
    let prometheus = find("BGTASKS_PROMETHEUS", "/usr/bin/prometheus");
    let promtool = find("BGTASKS_PROMTOOL", "/usr/bin/promtool");
    if prometheus.exists() && promtool.exists() {
        return Some((prometheus, promtool));
    }
    let why = format!(
        "{} or {} is missing: run scripts/install-prometheus.sh (Debian's prometheus)",
        prometheus.display(),
        promtool.display()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: {why}");
    }
    eprintln!("prometheus test skipped: {why}");
    None
}

/// `promtool ARGS…` must succeed.
fn promtool(promtool: &Path, args: &[&str]) -> String {
    let output = Command::new(promtool).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// A Prometheus server on a free loopback port; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(binary: &Path, targets: &[SocketAddr]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: bgtasks\n    static_configs:\n      - targets: [{}]\n",
            contrib("prometheus/alerts.yml").display(),
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus { child, addr, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/…` as JSON, or `None` when it does not answer yet.
    fn api(&self, path_and_query: &str) -> Option<Value> {
        let (status, body) = http_get(self.addr, path_and_query)?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The instant query's one value (a sum), or `None` when it has none.
    fn value(&self, query: &str) -> Option<f64> {
        let answer = self.api(&format!("/api/v1/query?query={}", encode(query)))?;
        let result = answer["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until `query` reads `expected` exactly.
    async fn wait_value(&self, query: &str, expected: f64) {
        let mut last = None;
        wait_for(
            &format!("Prometheus: {query} = {expected}"),
            Duration::from_secs(60),
            || {
                last = self.value(query);
                let done = last == Some(expected);
                async move { done }
            },
        )
        .await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The metric names a PromQL expression asks for (`background_tasks_…`
/// words), without histogram suffixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("background_tasks_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        let base = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| word.strip_suffix(suffix))
            .unwrap_or(&word);
        names.insert(base.to_owned());
    }
    names
}

/// Every `expr` in the Grafana dashboard.
fn grafana_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    _ => grafana_exprs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| grafana_exprs(item, out)),
        _ => {}
    }
}

async fn prometheus_agrees_with_the_database(t: TestDb) -> TestDb {
    let Some((prometheus_bin, promtool_bin)) = binaries() else {
        return t;
    };
    let rules = contrib("prometheus/alerts.yml");
    let checked = promtool(&promtool_bin, &["check", "rules", rules.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tests = contrib("prometheus/alerts_test.yml");
    promtool(&promtool_bin, &["test", "rules", tests.to_str().unwrap()]);

    let addrs: Vec<SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let runners: Vec<Process> = addrs
        .iter()
        .map(|addr| {
            Process::spawn(
                &t,
                &[
                    "--sleep",
                    "0.2",
                    "--threads",
                    "2",
                    "--metrics-addr",
                    &addr.to_string(),
                ],
            )
        })
        .collect();
    let served = scrape(addrs[0]).await;
    let prometheus = Prometheus::start(&prometheus_bin, &addrs);
    prometheus.wait_value("sum(up{job=\"bgtasks\"})", 2.0).await;

    // Due in a few seconds: while they wait, both runners' scrapes create
    // their counters at zero, so Prometheus sees every increase.
    let queue = queue(&t);
    for n in 0..TASKS {
        let queue_name = ["mail", "sms", "reports"][(n % 3) as usize];
        queue
            .enqueue::<builtin::Noop>(&())
            .queue(queue_name)
            .schedule(8)
            .await
            .unwrap();
    }
    prometheus
        .wait_value(
            "count(background_tasks_succeeded_total{task=\"bgtasks.noop\"})",
            // Two runners × the default queue and three named ones.
            8.0,
        )
        .await;
    let started = std::time::Instant::now();
    wait_for(
        "both runners ran every task",
        Duration::from_secs(120),
        || async { completed_task::Entity::find().count(&t.db).await.unwrap() == TASKS },
    )
    .await;
    let in_database = completed_task::Entity::find().count(&t.db).await.unwrap() as f64;

    // The sum of the runners' counters is exactly what the database holds.
    prometheus
        .wait_value("sum(background_tasks_succeeded_total)", in_database)
        .await;
    for queue_name in ["mail", "sms", "reports"] {
        prometheus
            .wait_value(
                &format!("sum(background_tasks_succeeded_total{{queue=\"{queue_name}\"}})"),
                in_database / 3.0,
            )
            .await;
    }
    // Both runners took part.
    let per_runner = prometheus
        .api(&format!(
            "/api/v1/query?query={}",
            encode("sum by (instance) (background_tasks_succeeded_total)")
        ))
        .unwrap();
    let per_runner: Vec<f64> = per_runner["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["value"][1].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(per_runner.len(), 2, "{per_runner:?}");
    // The rate over a window holding the whole run, times the window, is
    // the count (within the extrapolation Prometheus applies at the
    // window's edges).
    let window = started.elapsed().as_secs() + 5;
    let rate = prometheus
        .value(&format!(
            "sum(rate(background_tasks_succeeded_total[{window}s]))"
        ))
        .unwrap();
    let from_rate = rate * window as f64;
    eprintln!(
        "prometheus: sum(background_tasks_succeeded_total) = {in_database}, per runner \
         {per_runner:?}, sum(rate(background_tasks_succeeded_total[{window}s])) = {rate:.3}/s \
         (× {window} s = {from_rate:.1}); database: {in_database} history rows"
    );
    assert!(
        (from_rate - in_database).abs() <= in_database * 0.1,
        "sum(rate(succeeded[{window}s])) × {window} s = {from_rate:.1}, the database holds \
         {in_database}"
    );
    // The database gauges: max over the processes, as the rules do.
    prometheus
        .wait_value("max(background_tasks_runners_alive)", 2.0)
        .await;
    prometheus
        .wait_value(
            "sum(max by (queue) (background_tasks_tasks{state=\"pending\"}))",
            0.0,
        )
        .await;

    // The alert rules loaded in the real server.
    let rules = prometheus.api("/api/v1/rules").unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{rules}");
    assert_eq!(groups[0]["name"], "background-tasks");
    assert!(groups[0]["rules"].as_array().unwrap().len() >= 8, "{rules}");
    let firing: Vec<&Value> = groups[0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["state"] == "firing")
        .collect();
    assert!(
        firing.is_empty(),
        "alerts fire on a healthy fleet: {firing:?}"
    );

    // Every metric the Grafana dashboard charts is one the runners serve.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(contrib("grafana/background-tasks.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    grafana_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let served_now = scrape(addrs[0]).await;
    let served_names: BTreeSet<String> = served
        .lines()
        .chain(served_now.lines())
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                served_names.contains(&name),
                "the Grafana dashboard asks for {name}, which the runners do not serve \
                 ({expr}); served: {served_names:?}"
            );
        }
    }
    for name in metric_names(&std::fs::read_to_string(contrib("prometheus/alerts.yml")).unwrap()) {
        assert!(
            served_names.contains(&name),
            "an alert rule asks for {name}, which the runners do not serve"
        );
    }
    let log = prometheus.log();
    assert!(!log.contains("level=error"), "{log}");
    drop(prometheus);
    for runner in runners {
        runner.stop().await;
    }
    t
}
