//! Browser tests: a real headless Chromium, driven over WebDriver with
//! `fantoccini`, looking at pages the way a person would.
//!
//! [`Browser`] is the harness. It needs Debian's `chromium` and
//! `chromium-driver` packages (`/usr/bin/chromium`, `/usr/bin/chromedriver`;
//! `BGTASKS_CHROMIUM` and `BGTASKS_CHROMEDRIVER` point elsewhere).
//! `scripts/install-browser.sh` installs them, and `.ci/run` runs that script
//! before the tests, so under `CI=true` a missing browser fails the test;
//! elsewhere the test says on stderr that it is skipped and passes.
//!
//! Each [`Browser`] runs its own `chromedriver` on a free loopback port, with
//! a fresh Chromium profile in a temporary directory. Chromium runs with its
//! background networking (component updates, sync, QUIC, first-run fetches)
//! off: this machine's network is closed, and the pages under test are all
//! on 127.0.0.1. Screenshots go to `<CARGO_TARGET_TMPDIR>/browser/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use background_tasks::completed_task;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tempfile::TempDir;

use crate::fixture::TestDb;

const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver gets to answer `/status` after it is spawned.
const DRIVER_STARTUP: Duration = Duration::from_secs(20);

/// A headless Chromium session behind its own chromedriver.
///
/// Dropping it kills chromedriver and the Chromium it started; [`close`]
/// ends the WebDriver session first, which lets Chromium quit by itself.
///
/// [`close`]: Browser::close
pub struct Browser {
    client: Client,
    // Held for their `Drop`, in this order: chromedriver and Chromium are
    // gone before the profile directory is removed.
    _driver: Driver,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver and opens a session in a fresh headless Chromium.
    ///
    /// `None` when Chromium or chromedriver is not installed and `CI` is not
    /// `true` (a note on stderr says the browser test is skipped); under
    /// `CI=true` a missing browser panics instead.
    pub async fn start() -> Option<Browser> {
        let chromium = binary("BGTASKS_CHROMIUM", DEFAULT_CHROMIUM);
        let chromedriver = binary("BGTASKS_CHROMEDRIVER", DEFAULT_CHROMEDRIVER);
        let missing: Vec<String> = [&chromium, &chromedriver]
            .into_iter()
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        if !missing.is_empty() {
            let missing = missing.join(" and ");
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "the browser test needs {missing}: run scripts/install-browser.sh \
                     (or set BGTASKS_CHROMIUM / BGTASKS_CHROMEDRIVER)"
                );
            }
            eprintln!(
                "note: browser test skipped: {missing} not found. Run \
                 scripts/install-browser.sh (Debian's chromium and chromium-driver), \
                 or set BGTASKS_CHROMIUM and BGTASKS_CHROMEDRIVER, to enable it."
            );
            return None;
        }

        let profile = tempfile::tempdir().expect("creating a temporary Chromium profile directory");
        let driver = Driver::spawn(&chromedriver, profile.path());
        driver.wait_until_ready(DRIVER_STARTUP).await;

        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.path().join("chromium").display()),
                    "--window-size=1280,1000",
                ],
            },
        });
        let capabilities = capabilities
            .as_object()
            .expect("the capabilities are a JSON object")
            .clone();
        // chromedriver listens on localhost over plain HTTP: no TLS stack.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "opening a Chromium session through chromedriver failed: {e}\n{}",
                    driver.log_tail()
                )
            });
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("navigating to {url}: {e}"));
    }

    /// The first element matching `css`, once there is one; panics after
    /// `timeout`.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("waiting {timeout:?} for an element matching {css:?}: {e}"))
    }

    /// The first element matching `css` whose text contains `text`, once
    /// there is one; panics after `timeout` with the texts it last saw.
    /// With `reload`, the page is reloaded between tries, for pages that
    /// only change when they are fetched again.
    pub async fn wait_for_text(
        &self,
        css: &str,
        text: &str,
        timeout: Duration,
        reload: bool,
    ) -> Element {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            // A failed lookup (say, an element gone stale under a reload)
            // is one more try, not a failure.
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for element in elements {
                    if let Ok(found) = element.text().await {
                        if found.contains(text) {
                            return element;
                        }
                        seen.push(found);
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {css:?} to contain {text:?}; \
                 last seen: {seen:?}"
            );
            if reload {
                self.client
                    .refresh()
                    .await
                    .unwrap_or_else(|e| panic!("reloading the page: {e}"));
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Waits until the current URL contains `part` (a navigation landed).
    pub async fn wait_for_url(&self, part: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let url = self
                .client
                .current_url()
                .await
                .map(|url| url.to_string())
                .unwrap_or_default();
            if url.contains(part) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the URL to contain {part:?}; it is {url:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub async fn execute(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("running a script in the page: {e}"))
    }

    /// Sets the window's size; headless, the viewport is the whole window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .unwrap_or_else(|e| panic!("resizing the window to {width}×{height}: {e}"));
    }

    /// Saves a PNG of the viewport as `<CARGO_TARGET_TMPDIR>/browser/<name>.png`
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("taking the screenshot {name:?}: {e}"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// Ends the WebDriver session, so Chromium quits, then stops chromedriver.
    pub async fn close(self) {
        // `Client::close` takes its client by value; the clone is the same
        // session.
        if let Err(e) = self.client.clone().close().await {
            eprintln!("note: ending the WebDriver session failed: {e}");
        }
    }
}

/// `$var` if set, else `default`.
fn binary(var: &str, default: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// A free loopback port: bound, then let go for the caller to bind.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port on 127.0.0.1")
        .port()
}

/// A running chromedriver, killed with the Chromium it started on drop.
struct Driver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Driver {
    /// Spawns chromedriver on a free port in a process group of its own, so
    /// that [`Drop`] reaches the Chromium processes it starts too. Its log
    /// goes to `chromedriver.log` in `dir`.
    fn spawn(chromedriver: &Path, dir: &Path) -> Driver {
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", chromedriver.display()));
        Driver { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Polls `/status` until chromedriver says it is ready; panics, with
    /// its log, when it exits or `timeout` passes first.
    async fn wait_until_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        while !status_ready(addr) {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer {}/status within {timeout:?}\n{}",
                self.url(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The end of chromedriver's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "chromedriver log ({}):\n{}",
            self.log.display(),
            &log[start..]
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started, which
        // outlives a chromedriver killed alone.
        let group = libc::pid_t::try_from(self.child.id()).expect("a pid fits in pid_t");
        // SAFETY: kill(2) takes no pointers; a negative pid names the
        // process group this child leads, which holds only processes that
        // this harness started.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// One `GET /status`: does chromedriver answer that it is ready?
fn status_ready(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    status_body(stream, addr).is_ok_and(|body| body.contains("\"ready\":true"))
}

/// The body of a 200 answer to `GET /status`, read by its Content-Length:
/// chromedriver keeps the connection open despite `Connection: close`.
fn status_body(mut stream: TcpStream, addr: SocketAddr) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("status answered {line:?}")));
    }
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(std::io::Error::other)?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The example app (`examples/actix_web_app.rs`, built by `cargo test`)
/// running as its own process on a free port, killed on drop.
struct ExampleApp {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: TempDir,
}

impl ExampleApp {
    /// Starts the example on `database_url`, with `MAX_ATTEMPTS=1` so a
    /// failure is permanent at once. `None` (with a note) when the example
    /// is not built and `CI` is not `true`.
    fn start(database_url: &str) -> Option<ExampleApp> {
        let exe = std::env::current_exe().expect("the test binary's path");
        // target/debug/deps/integration-* → target/debug/examples/actix_web_app
        let binary = exe
            .parent()
            .and_then(Path::parent)
            .map(|dir| dir.join("examples").join("actix_web_app"))
            .expect("the target directory");
        if !binary.exists() {
            let message = format!(
                "{} is not built: `cargo test --workspace` builds the examples",
                binary.display()
            );
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("note: the dashboard browser test is skipped: {message}");
            return None;
        }
        let dir = tempfile::tempdir().expect("a working directory for the example");
        let log = dir.path().join("example.log");
        let port = free_port();
        let child = Command::new(&binary)
            .current_dir(dir.path())
            .env("DATABASE_URL", database_url)
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("MAX_ATTEMPTS", "1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the example's log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let app = ExampleApp {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the example app did not listen on port {port} within 30 s:\n{}",
                app.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(app)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it as an operator would (SIGTERM) and waits for it to exit:
    /// its status and its log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = i32::try_from(self.child.id()).expect("a pid fits an i32");
        // SAFETY: sends SIGTERM to our own child process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the example") {
                return (status, self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the example did not stop within 60 s of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ExampleApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bgtasks dashboard` on `t`'s database, on a free loopback port, killed
/// on drop.
struct DashboardServer {
    _process: Stopped,
    port: u16,
}

impl DashboardServer {
    fn start(t: &TestDb) -> DashboardServer {
        let port = free_port();
        let process = Stopped(
            crate::cli::bgtasks(t)
                .args(["dashboard", "--bind", &format!("127.0.0.1:{port}")])
                .env_remove("BGTASKS_DASHBOARD_PASSWORD")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting bgtasks dashboard"),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "bgtasks dashboard did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        DashboardServer {
            _process: process,
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

on_all_backends!(
    dashboard_retry_turns_a_failed_task_into_a_success,
    long_names_wrap_in_every_table,
    a_task_finished_by_another_process_shows_without_a_reload,
    every_page_on_desktop_and_phone,
);

/// A person's path through the example app: enqueue a sync that fails,
/// find it in the dashboard's failed list, retry it, and see it succeed.
async fn dashboard_retry_turns_a_failed_task_into_a_success(t: TestDb) -> TestDb {
    let Some(app) = ExampleApp::start(&t.url) else {
        return t;
    };
    let Some(browser) = Browser::start().await else {
        return t;
    };
    let backend = format!("{:?}", t.backend).to_lowercase();
    let wait = Duration::from_secs(30);

    browser.goto(&app.url("/")).await;
    browser
        .wait_for("#sync-inventory", wait)
        .await
        .click()
        .await
        .expect("clicking Sync inventory");
    // The click only starts the form's POST: navigating away before its
    // redirect lands would cancel it.
    browser.wait_for_url("synced=1", wait).await;

    // The sync fails on its first try; with MAX_ATTEMPTS=1 that is final.
    browser
        .goto(&app.url("/dashboard/tasks?state=failed"))
        .await;
    browser
        .wait_for_text("#tasks td.task-name", "shop.sync_inventory", wait, true)
        .await;
    browser.wait_for_text("#tasks td", "503", wait, false).await;
    let failed = browser
        .screenshot(&format!("dashboard-failed-{backend}"))
        .await;

    browser
        .wait_for("#tasks tr[data-id] input[name=id]", wait)
        .await
        .click()
        .await
        .expect("ticking the failed task");
    browser
        .wait_for("button[value=retry]", wait)
        .await
        .click()
        .await
        .expect("pressing Retry");
    browser
        .wait_for_text(".notice", "1 task put back in the queue", wait, false)
        .await;

    // The runner in the app runs it again, and this time it succeeds.
    browser
        .goto(&app.url("/dashboard/tasks?state=completed"))
        .await;
    browser
        .wait_for_text("#tasks td.task-name", "shop.sync_inventory", wait, true)
        .await;
    browser
        .wait_for_text("#tasks td", "earlier attempt failed", wait, false)
        .await;
    let succeeded = browser
        .screenshot(&format!("dashboard-retried-{backend}"))
        .await;
    browser.goto(&app.url("/dashboard/")).await;
    browser
        .wait_for_text("figcaption", "1 completed", wait, true)
        .await;
    let overview = browser
        .screenshot(&format!("dashboard-overview-{backend}"))
        .await;
    browser.close().await;

    let history = completed_task::Entity::find()
        .filter(completed_task::Column::TaskName.eq("shop.sync_inventory"))
        .all(&t.db)
        .await
        .expect("reading the history");
    assert_eq!(
        history.len(),
        1,
        "the failed row was replaced by the success: {history:?}"
    );
    assert!(
        history[0].failed_at.is_none(),
        "{:?}\n{}",
        history[0],
        app.log_text()
    );
    // The server stops on SIGTERM, then the runner drains and deregisters.
    let (status, log) = app.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("runner stopped"), "{log}");
    for png in [failed, succeeded, overview] {
        let bytes =
            std::fs::read(&png).unwrap_or_else(|e| panic!("reading {}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            png.display()
        );
    }
    t
}

/// A name of `len` characters without a space.
fn unbroken(prefix: &str, len: usize) -> String {
    let mut name = prefix.to_owned();
    while name.len() < len {
        name.push_str("_abcdefghij");
    }
    name.truncate(len);
    name
}

/// Task names, labels, queues, errors and schedule names as long as their
/// columns allow, without a space: every table of every page wraps them
/// inside the 1280-pixel window instead of running off its right edge.
async fn long_names_wrap_in_every_table(t: TestDb) -> TestDb {
    let queue = crate::cli::queue(&t);
    let name = unbroken("task", 190);
    let label = unbroken("label", 255);
    let queue_name = unbroken("queue", 190);
    let task = queue
        .enqueue_call(&name, &(unbroken("param", 400),), &())
        .queue(queue_name.clone())
        .verbose_name(label)
        .await
        .expect("enqueueing a task with long names")
        .into_task()
        .expect("a new task");
    // A failed earlier run of the same call: the pages show the chain.
    let done = crate::rows::History {
        error: Some(unbroken("Traceback:", 2_000)),
        queue: Some(queue_name),
        params: task.task_params.clone(),
        hash: Some(task.task_hash.clone()),
        ..crate::rows::History::of(&name)
    }
    .insert(&t)
    .await;
    background_tasks::cron::create(
        &t.db,
        background_tasks::cron::NewSchedule::call(
            &unbroken("schedule", 190),
            &name,
            "0 3 * * *",
            &[] as &[serde_json::Value],
            &serde_json::Map::new(),
        ),
        chrono::Utc::now(),
    )
    .await
    .expect("a schedule with long names");
    let Some(browser) = Browser::start().await else {
        return t;
    };
    let server = DashboardServer::start(&t);
    let backend = format!("{:?}", t.backend).to_lowercase();
    for (page, table) in [
        ("/tasks?state=pending".to_owned(), "#tasks"),
        ("/tasks?state=failed".to_owned(), "#tasks"),
        (format!("/tasks/{}", task.id), "table.fields"),
        (format!("/completed/{done}"), "table.fields"),
        (format!("/completed/{done}"), "table.chain"),
        ("/".to_owned(), "table.grid"),
        ("/schedules".to_owned(), "#schedules"),
    ] {
        browser.goto(&server.url(&page)).await;
        browser.wait_for(table, Duration::from_secs(30)).await;
        let sizes = browser
            .execute(&format!(
                "const table = document.querySelector({table:?});
                 return [Math.ceil(table.getBoundingClientRect().right),
                         document.documentElement.scrollWidth,
                         document.documentElement.clientWidth];"
            ))
            .await;
        let [right, scroll, width] = [0, 1, 2].map(|i| sizes[i].as_i64().unwrap_or(i64::MAX));
        if std::env::var_os("BGTASKS_SCREENSHOTS").is_some() {
            browser
                .screenshot(&format!(
                    "long-names-{backend}-{}",
                    page.replace(['/', '?', '='], "_")
                ))
                .await;
        }
        if right > width || scroll > width {
            let shot = browser
                .screenshot(&format!(
                    "long-names-{backend}-{}",
                    page.replace(['/', '?', '='], "_")
                ))
                .await;
            panic!(
                "{page}: {table} ends at {right} px and the page is {scroll} px wide, in a \
                 window {width} px wide (see {})",
                shot.display()
            );
        }
    }
    browser.close().await;
    t
}

/// A child process killed when dropped, also when the test fails.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `bgtasks` command `args` has run on `t`'s database and
/// succeeded.
fn run_bgtasks(t: &TestDb, args: &[&str]) {
    let output = crate::cli::bgtasks(t)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running bgtasks {args:?}: {e}"));
    assert!(
        output.status.success(),
        "bgtasks {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Whether the page set `window.__marker` earlier is still the one shown:
/// a reload would have dropped the marker.
async fn marker(browser: &Browser) -> serde_json::Value {
    browser
        .execute("return window.__marker === undefined ? null : window.__marker;")
        .await
}

/// The dashboard open in a browser; a task is enqueued by one process and
/// run by another; the open page shows it finished without being
/// reloaded: the row in the completed list, and the count beside
/// "Completed" in the navigation.
async fn a_task_finished_by_another_process_shows_without_a_reload(t: TestDb) -> TestDb {
    let Some(browser) = Browser::start().await else {
        return t;
    };
    let server = DashboardServer::start(&t);
    let wait = Duration::from_secs(30);
    browser.goto(&server.url("/tasks?state=completed")).await;
    browser
        .wait_for_text("p.empty", "No completed tasks match", wait, false)
        .await;
    // app.js has started its updates: the status says so.
    browser.wait_for("#live[data-state=live]", wait).await;
    browser.execute("window.__marker = 1; return true;").await;

    run_bgtasks(&t, &["enqueue", "bgtasks.noop"]);
    let _runner = Stopped(
        crate::cli::bgtasks(&t)
            .args(["process", "--duration", "300", "--sleep", "0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting bgtasks process"),
    );

    browser
        .wait_for_text("#tasks td.task-name", "bgtasks.noop", wait, false)
        .await;
    browser
        .wait_for_text("header nav .n[data-state=completed]", "1", wait, false)
        .await;
    assert_eq!(
        marker(&browser).await,
        serde_json::json!(1),
        "the page was reloaded: it should have changed in place"
    );
    let gone = browser
        .execute("return document.querySelectorAll('p.empty').length;")
        .await;
    assert_eq!(gone, serde_json::json!(0), "the empty-list note is gone");

    // The runner that ran it shows on the runners page, with what it did.
    browser.goto(&server.url("/runners")).await;
    let throughput = browser
        .wait_for("#runners td.throughput", wait)
        .await
        .text()
        .await
        .expect("reading the throughput");
    let rate: f64 = throughput
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{throughput:?} is not a rate: {e}"));
    assert!(rate > 0.0, "the runner finished a task: {throughput}");
    browser.close().await;
    t
}

/// A phone's viewport (an iPhone SE's, the narrowest in common use).
const PHONE: (u32, u32) = (375, 812);
/// A laptop's.
const DESKTOP: (u32, u32) = (1280, 1000);

/// Every page of the dashboard, with something on it, saved as a
/// screenshot at a desktop's and a phone's width
/// (`dashboard-<backend>-<desktop|phone>-<page>.png`). At the phone's
/// width no page scrolls sideways: wide tables scroll in their own box.
async fn every_page_on_desktop_and_phone(t: TestDb) -> TestDb {
    let Some(browser) = Browser::start().await else {
        return t;
    };
    let wait = Duration::from_secs(60);
    let queue = crate::cli::queue(&t);
    // A runner of the "work" queue finishes some tasks, fails one for
    // good, and keeps two running while the pages are shot; the "mail"
    // queue's tasks, which it does not take, stay pending or scheduled.
    for i in 0..12 {
        queue
            .enqueue_call("bgtasks.echo", &(format!("report {i}"),), &())
            .queue("work")
            .await
            .expect("enqueueing work");
    }
    queue
        .enqueue_call("bgtasks.reject", &(), &())
        .queue("work")
        .await
        .expect("enqueueing a task that fails");
    for seconds in [600, 601] {
        queue
            .enqueue_call("bgtasks.sleep", &(seconds,), &())
            .queue("work")
            .await
            .expect("enqueueing a long task");
    }
    let mut pending = Vec::new();
    for (i, to) in ["ada@example.com", "grace@example.com", "edsger@example.com"]
        .into_iter()
        .enumerate()
    {
        let task = queue
            .enqueue_call(
                "mail.send",
                &(to,),
                &serde_json::json!({"subject": "Weekly report"}),
            )
            .queue("mail")
            .priority(i as i32)
            .await
            .expect("enqueueing mail")
            .into_task()
            .expect("a new task");
        pending.push(task);
    }
    queue
        .enqueue_call("mail.digest", &(), &())
        .queue("mail")
        .schedule(3_600)
        .await
        .expect("enqueueing a scheduled task");
    background_tasks::cron::create(
        &t.db,
        background_tasks::cron::NewSchedule::call(
            "nightly-report",
            "bgtasks.echo",
            "0 3 * * *",
            &[serde_json::json!("nightly")],
            &serde_json::Map::new(),
        ),
        chrono::Utc::now(),
    )
    .await
    .expect("creating a schedule");
    let _runner = Stopped(
        crate::cli::bgtasks(&t)
            .args([
                "process",
                "--queue",
                "work",
                "--threads",
                "4",
                "--duration",
                "600",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting bgtasks process"),
    );
    let db = t.db.clone();
    crate::fixture::wait_for("the runner to finish 13 tasks", wait, || {
        let db = db.clone();
        async move {
            completed_task::Entity::find()
                .all(&db)
                .await
                .map_or(0, |rows| rows.len())
                >= 13
        }
    })
    .await;
    crate::fixture::wait_for("the runner to report two tasks in flight", wait, || {
        let db = db.clone();
        async move {
            background_tasks::runner_row::Entity::find()
                .all(&db)
                .await
                .is_ok_and(|rows| rows.iter().any(|row| row.running == 2))
        }
    })
    .await;
    let failed = completed_task::Entity::find()
        .filter(completed_task::Column::FailedAt.is_not_null())
        .one(&t.db)
        .await
        .expect("reading the history")
        .expect("the rejected task failed for good");

    let server = DashboardServer::start(&t);
    let backend = format!("{:?}", t.backend).to_lowercase();
    let pages = [
        ("overview", "/".to_owned(), "figure.chart"),
        ("pending", "/tasks?state=pending".to_owned(), "#tasks"),
        ("scheduled", "/tasks?state=scheduled".to_owned(), "#tasks"),
        (
            "running",
            "/tasks?state=running".to_owned(),
            "#tasks tr[data-id]",
        ),
        (
            "completed",
            "/tasks?state=completed&limit=5".to_owned(),
            "#tasks tr[data-id]",
        ),
        (
            "failed",
            "/tasks?state=failed".to_owned(),
            "#tasks tr[data-id]",
        ),
        ("task", format!("/tasks/{}", pending[0].id), "table.fields"),
        (
            "failed-task",
            format!("/completed/{}", failed.id),
            "pre.error",
        ),
        ("runners", "/runners".to_owned(), "#runners tr[data-runner]"),
        ("schedules", "/schedules".to_owned(), "#schedules"),
    ];
    let mut shots = Vec::new();
    for (device, (width, height)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        browser.resize(width, height).await;
        for (name, path, shown) in &pages {
            browser.goto(&server.url(path)).await;
            browser.wait_for(shown, wait).await;
            browser.wait_for("#live[data-state=live]", wait).await;
            let sizes = browser
                .execute(
                    "return [document.documentElement.scrollWidth, \
                     document.documentElement.clientWidth, window.innerWidth];",
                )
                .await;
            let [scroll, client, inner] = [0, 1, 2].map(|i| sizes[i].as_i64().unwrap_or(i64::MAX));
            let shot = browser
                .screenshot(&format!("dashboard-{backend}-{device}-{name}"))
                .await;
            if device == "phone" {
                assert!(
                    inner <= i64::from(width),
                    "the window is {inner} px wide, not a phone's {width} px"
                );
            }
            assert!(
                scroll <= client,
                "{path} on a {device}: the page is {scroll} px wide in a {client} px window, so \
                 it scrolls sideways (see {})",
                shot.display()
            );
            shots.push(shot);
        }
    }
    // The runner's row says what it is doing.
    browser.goto(&server.url("/runners")).await;
    browser.wait_for("#runners tr[data-runner]", wait).await;
    let runner = browser
        .execute(
            "const row = document.querySelector('#runners tr[data-runner]');
             return [row.querySelector('td.in-flight').textContent.trim(),
                     row.querySelector('td.slots').textContent.trim()];",
        )
        .await;
    assert_eq!(
        runner,
        serde_json::json!(["2", "4"]),
        "two long tasks of four slots"
    );
    browser.close().await;
    for png in shots {
        let bytes =
            std::fs::read(&png).unwrap_or_else(|e| panic!("reading {}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            png.display()
        );
    }
    t
}
