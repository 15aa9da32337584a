//! Operating a fleet from outside: `bgtasks process --metrics-addr`
//! scraped over HTTP, queues paused and resumed with `bgtasks pause` /
//! `resume` while runners run, and runners drained by `bgtasks drain`, the
//! JSON API or SIGQUIT. Everything goes through the built binary and the
//! rows it leaves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use background_tasks::{builtin, completed_task, task_row};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::cli::{bgtasks, queue};
use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    process_serves_its_metrics,
    a_taken_or_malformed_metrics_address_starts_nothing,
    a_paused_queue_waits_and_resumes_within_a_heartbeat,
    pausing_an_unknown_queue_is_refused,
    a_runner_drains_on_request_and_on_sigquit,
);

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` over plain HTTP/1.1: the status and the body, or `None`
/// when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_owned()
        },
    ))
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size + 2..)?;
    }
}

/// The value of the sample `series` (name and labels exactly as written)
/// in OpenMetrics text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// A `bgtasks process` child whose log goes to a file; killed when dropped.
pub struct Process {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn spawn(t: &TestDb, args: &[&str]) -> Process {
        Process::spawn_with(t, args, &[])
    }

    /// With environment variables.
    pub fn spawn_with(t: &TestDb, args: &[&str], env: &[(&str, &str)]) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runner.log");
        let child = bgtasks(t)
            .arg("process")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Process {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Waits for the process to exit by itself; its status and log.
    pub async fn exited(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the runner did not exit within {within:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(self) -> String {
        self.signal(libc::SIGTERM);
        self.exited(Duration::from_secs(30)).await.1
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `addr/metrics` answers; its text.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut text = String::new();
    wait_for(
        "the metrics endpoint answers",
        Duration::from_secs(30),
        || {
            let got = http_get(addr, "/metrics");
            let ok = matches!(&got, Some((200, _)));
            if let Some((200, body)) = got {
                text = body;
            }
            async move { ok }
        },
    )
    .await;
    text
}

async fn completed(t: &TestDb, name: &str) -> u64 {
    completed_task::Entity::find()
        .filter(completed_task::Column::TaskName.eq(name))
        .count(&t.db)
        .await
        .unwrap()
}

async fn waiting(t: &TestDb) -> u64 {
    task_row::Entity::find().count(&t.db).await.unwrap()
}

async fn process_serves_its_metrics(t: TestDb) -> TestDb {
    let queue = queue(&t);
    for _ in 0..20 {
        queue
            .enqueue::<builtin::Noop>(&())
            .queue("mail")
            .await
            .unwrap();
    }
    queue.enqueue::<builtin::Fail>(&()).await.unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The address through the environment, as a deployment sets it.
    let addr_text = addr.to_string();
    let process = Process::spawn_with(
        &t,
        &["--sleep", "0.1", "--threads", "2"],
        &[("BACKGROUND_TASK_METRICS_ADDR", &addr_text)],
    );
    let mut text = String::new();
    wait_for(
        "the runner's metrics count 20 succeeded tasks",
        Duration::from_secs(60),
        || {
            let got = http_get(addr, "/metrics");
            let done = got.as_ref().and_then(|(_, body)| {
                sample(
                    body,
                    "background_tasks_succeeded_total{task=\"bgtasks.noop\",queue=\"mail\"}",
                )
            }) == Some(20.0);
            if let Some((_, body)) = got {
                text = body;
            }
            async move { done }
        },
    )
    .await;
    assert_eq!(completed(&t, "bgtasks.noop").await, 20);
    let expect = |series: &str| {
        sample(&text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
    };
    assert_eq!(
        expect("background_tasks_started_total{task=\"bgtasks.noop\",queue=\"mail\"}"),
        20.0
    );
    assert_eq!(
        expect("background_tasks_retried_total{task=\"bgtasks.fail\",queue=\"\"}"),
        1.0
    );
    assert_eq!(expect("background_tasks_slots"), 2.0);
    assert_eq!(expect("background_tasks_in_flight"), 0.0);
    assert_eq!(expect("background_tasks_draining"), 0.0);
    assert_eq!(expect("background_tasks_runners_alive"), 1.0);
    assert_eq!(expect("background_tasks_database_readable"), 1.0);
    assert_eq!(
        expect("background_tasks_queue_paused{queue=\"\"}"),
        0.0,
        "{text}"
    );
    assert!(expect("background_tasks_claim_batch_size_count") >= 1.0);
    assert!(expect("background_tasks_claim_seconds_count") >= 1.0);
    // Every outcome was written by some batch: the batch sizes add up.
    assert_eq!(expect("background_tasks_outcome_batch_size_sum"), 21.0);
    assert!(expect("background_tasks_outcome_write_seconds_count") >= 1.0);
    assert!(
        expect("background_tasks_execution_seconds_count{task=\"bgtasks.noop\",queue=\"mail\"}")
            == 20.0
    );
    // Only GET /metrics is served.
    let (status, body) = http_get(addr, "/").unwrap();
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("GET /metrics"), "{body}");
    let log = process.stop().await;
    assert!(
        log.contains(&format!("metrics on http://{addr}/metrics")),
        "{log}"
    );
    t
}

async fn a_taken_or_malformed_metrics_address_starts_nothing(t: TestDb) -> TestDb {
    let queue = queue(&t);
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = bgtasks(&t)
        .args(["process", "--duration", "5", "--sleep", "0.1"])
        .args(["--metrics-addr", &addr])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("choose a free port"), "{stderr}");
    // The runner never started: the task is still there, never claimed.
    let rows = task_row::Entity::find().all(&t.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].locked_by, None);
    assert_eq!(rows[0].attempts, 0);
    for bad in [
        "9464",
        "localhost",
        "127.0.0.1:99999",
        ":9464",
        "127.0.0.1:port",
    ] {
        let output = bgtasks(&t)
            .args(["process", "--duration", "5", "--metrics-addr", bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("HOST:PORT"), "{bad}: {stderr}");
    }
    // Also through the environment variable.
    let output = bgtasks(&t)
        .args(["process", "--duration", "5"])
        .env("BACKGROUND_TASK_METRICS_ADDR", "nowhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(waiting(&t).await, 1);
    drop(taken);
    t
}

async fn a_paused_queue_waits_and_resumes_within_a_heartbeat(t: TestDb) -> TestDb {
    let queue = queue(&t);
    // A task of the queue makes it known.
    queue
        .enqueue::<builtin::Noop>(&())
        .queue("mail")
        .await
        .unwrap();
    let paused = bgtasks(&t).args(["pause", "mail"]).output().unwrap();
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    // A one-second heartbeat (a third of the lease).
    let runner = Process::spawn(&t, &["--sleep", "0.1", "--lease", "3"]);
    // The default queue runs; the paused one waits.
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    wait_for(
        "the default queue's task ran",
        Duration::from_secs(30),
        || async { completed(&t, "bgtasks.noop").await == 1 },
    )
    .await;
    let mail = task_row::Entity::find()
        .filter(task_row::Column::Queue.eq("mail"))
        .all(&t.db)
        .await
        .unwrap();
    assert_eq!(mail.len(), 1, "the paused queue's task ran");
    assert_eq!(mail[0].locked_by, None);
    // Its tasks still enqueue.
    queue
        .enqueue::<builtin::Noop>(&())
        .queue("mail")
        .await
        .unwrap();
    let list = bgtasks(&t).args(["paused", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["paused"][0]["queue"], "mail", "{list}");
    // Resumed while the runner runs: its next heartbeat claims them.
    let resumed = bgtasks(&t).args(["resume", "mail"]).output().unwrap();
    assert!(resumed.status.success());
    wait_for(
        "the resumed queue's tasks ran",
        Duration::from_secs(10),
        || async { completed(&t, "bgtasks.noop").await == 3 },
    )
    .await;
    // Paused while the runner runs: once it says so, nothing of it starts.
    let paused = bgtasks(&t)
        .args(["pause", "mail", "(default)"])
        .output()
        .unwrap();
    assert!(paused.status.success());
    wait_for(
        "the runner saw the pause at a heartbeat",
        Duration::from_secs(10),
        || async {
            runner
                .log()
                .contains(r#"a queue was paused: claiming none of its tasks paused=["", "mail"]"#)
        },
    )
    .await;
    queue
        .enqueue::<builtin::Noop>(&())
        .queue("mail")
        .await
        .unwrap();
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    queue
        .enqueue::<builtin::Noop>(&())
        .queue("sms")
        .await
        .unwrap();
    wait_for(
        "the unpaused queue's task ran",
        Duration::from_secs(30),
        || async { completed(&t, "bgtasks.noop").await == 4 },
    )
    .await;
    let left = task_row::Entity::find().all(&t.db).await.unwrap();
    let mut left: Vec<Option<String>> = left.into_iter().map(|row| row.queue).collect();
    left.sort();
    assert_eq!(left, vec![None, Some("mail".to_owned())]);
    // Resuming a queue that is not paused changes nothing (exit 3).
    let not_paused = bgtasks(&t).args(["resume", "sms"]).output().unwrap();
    assert_eq!(not_paused.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&not_paused.stderr).contains("was paused"));
    let resumed = bgtasks(&t)
        .args(["resume", "mail", "(default)"])
        .output()
        .unwrap();
    assert!(resumed.status.success());
    wait_for("every task ran", Duration::from_secs(10), || async {
        completed(&t, "bgtasks.noop").await == 6
    })
    .await;
    runner.stop().await;
    t
}

async fn pausing_an_unknown_queue_is_refused(t: TestDb) -> TestDb {
    let queue = queue(&t);
    queue
        .enqueue::<builtin::Noop>(&())
        .queue("mail")
        .await
        .unwrap();
    // A typo among known names pauses nothing.
    let output = bgtasks(&t)
        .args(["pause", "mail", "mial"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nothing names queue \"mial\""), "{stderr}");
    assert!(stderr.contains("--new"), "{stderr}");
    let list = bgtasks(&t).args(["paused", "--json"]).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["paused"], serde_json::json!([]));
    // Before its first task, on purpose.
    let output = bgtasks(&t)
        .args(["pause", "--new", "reports"])
        .output()
        .unwrap();
    assert!(output.status.success());
    // A name no queue can have.
    let long = "q".repeat(191);
    let output = bgtasks(&t)
        .args(["pause", "--new", &long])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at most 190"));
    // An unknown runner to drain.
    let output = bgtasks(&t).args(["drain", "nobody:1:0"]).output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no runner \"nobody:1:0\""));
    t
}

/// The id of the one runner registered, once it is.
async fn runner_id(t: &TestDb) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = background_tasks::runner_row::Entity::find()
            .one(&t.db)
            .await
            .unwrap();
        if let Some(row) = row {
            return row.runner_id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runner never registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_runner_drains_on_request_and_on_sigquit(t: TestDb) -> TestDb {
    let queue = queue(&t);
    for how in ["bgtasks drain", "SIGQUIT"] {
        // One long task runs; five wait behind it (one slot).
        queue.enqueue::<builtin::Sleep>(&1.5).await.unwrap();
        for _ in 0..5 {
            queue.enqueue::<builtin::Noop>(&()).await.unwrap();
        }
        let runner = Process::spawn(&t, &["--sleep", "0.1", "--lease", "3", "--prefetch", "0"]);
        let id = runner_id(&t).await;
        wait_for("the long task runs", Duration::from_secs(30), || async {
            task_row::Entity::find()
                .filter(task_row::Column::TaskName.eq("bgtasks.sleep"))
                .one(&t.db)
                .await
                .unwrap()
                .is_some_and(|row| row.locked_by.is_some())
        })
        .await;
        if how == "SIGQUIT" {
            runner.signal(libc::SIGQUIT);
        } else {
            let output = bgtasks(&t).args(["drain", &id]).output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let (status, log) = runner.exited(Duration::from_secs(30)).await;
        assert!(status.success(), "{how}: {log}");
        // The task it held finished; nothing more was claimed.
        assert_eq!(completed(&t, "bgtasks.sleep").await, 1, "{how}: {log}");
        let left = task_row::Entity::find().all(&t.db).await.unwrap();
        assert!(
            left.len() >= 4,
            "{how}: the drained runner went on claiming: {left:?}\n{log}"
        );
        assert!(left.iter().all(|row| row.locked_by.is_none()), "{left:?}");
        assert!(log.contains("drain"), "{log}");
        // Clean up for the next round: the rest run elsewhere.
        task_row::Entity::delete_many().exec(&t.db).await.unwrap();
        completed_task::Entity::delete_many()
            .exec(&t.db)
            .await
            .unwrap();
    }
    t
}
