//! The README's examples as a user gets them: the "Quick start" and
//! "Embedded in an actix-web app" blocks, each built as the `src/main.rs`
//! of a crate of its own that depends on this one by path, with the
//! `[dependencies]` block the Quick start tells users to add, then run.
//!
//! - **Taken from README.md at test time**, so the README cannot drift:
//!   the two Rust blocks verbatim, and the TOML block with one change, the
//!   `background-tasks` line pointing at this checkout. Each crate's
//!   manifest adds `[package]` and an empty `[workspace]` (the crates live
//!   inside this checkout's target directory, not in its workspace).
//! - **Hidden lines**: rustdoc hides `# ` lines, but GitHub and crates.io
//!   show them as they are, so a reader who copies a block gets them too.
//!   These two blocks must therefore be complete programs without hidden
//!   lines; the test refuses one, naming it. (The README's other blocks may
//!   hide scaffolding: they are doctests only.)
//! - **Build cost**: both crates build into one target directory kept
//!   between runs, `target/user-crates/target` (their sources are in
//!   `target/user-crates/<name>/`, to inspect or rerun by hand), each crate
//!   once per test run, `--offline` from a copy of the workspace's
//!   Cargo.lock, so the versions are the workspace's and nothing is
//!   downloaded; a check of the resulting lock says which package the
//!   README's dependencies would add. Debug info is off. A cold build, every
//!   dependency, takes 4.6 CPU-minutes (so about 3 minutes on two idle
//!   cores; 11.6 minutes measured on two cores at a load of 11) and leaves
//!   850 MB; afterwards a run rebuilds only what changed, in seconds.
//! - Without a working cargo (a test binary run by hand) the tests are
//!   skipped with a note, except under `CI=true`, where they fail.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use background_tasks::completed_task;
use sea_orm::{ColumnTrait, Database, EntityTrait, QueryFilter};

use crate::fixture::{TestDb, wait_for};

/// What the runner prints on stderr when nothing receives its logs.
const NO_LOGGER_NOTE: &str = "Nothing receives its logs";

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The first fenced block whose info string starts with `lang` in the
/// section under the heading line `heading` (up to the next heading of any
/// level outside a code block).
fn block(readme: &str, heading: &str, lang: &str) -> String {
    enum At<'a> {
        Prose,
        OtherBlock,
        Wanted(Vec<&'a str>),
    }
    let mut lines = readme.lines().skip_while(|line| *line != heading);
    assert!(
        lines.next().is_some(),
        "README.md has no heading {heading:?}: the test builds the block under it"
    );
    let mut at = At::Prose;
    for line in lines {
        let fence = line.strip_prefix("```");
        match (&mut at, fence) {
            (At::Prose, Some(info)) if info.split(',').next() == Some(lang) => {
                at = At::Wanted(Vec::new());
            }
            (At::Prose, Some(_)) => at = At::OtherBlock,
            (At::Prose, None) if line.starts_with('#') => break,
            (At::OtherBlock, Some(_)) => at = At::Prose,
            (At::Wanted(body), Some(_)) => return body.join("\n") + "\n",
            (At::Wanted(body), None) => body.push(line),
            (At::Prose | At::OtherBlock, None) => {}
        }
    }
    panic!("README.md has no ```{lang} block under {heading:?}")
}

/// The block of a program a user copies: refuses rustdoc's hidden lines.
fn program(readme: &str, heading: &str) -> String {
    let code = block(readme, heading, "rust");
    if let Some((n, line)) = hidden_line(&code) {
        panic!(
            "line {n} of the Rust block under {heading:?} in README.md is hidden from rustdoc \
             ({line:?}), but GitHub shows it as it is, and a user copying the block gets it: \
             make the block a complete program without hidden lines"
        );
    }
    code
}

/// The first line rustdoc hides (`# ...` or a lone `#`), numbered from 1.
fn hidden_line(code: &str) -> Option<(usize, &str)> {
    code.lines().enumerate().find_map(|(n, line)| {
        let trimmed = line.trim_start();
        (trimmed == "#" || trimmed.starts_with("# ")).then_some((n + 1, line))
    })
}

/// The README's `[dependencies]`, with `background-tasks` pointing here.
fn dependencies(readme: &str) -> String {
    let toml = block(readme, "## Quick start", "toml");
    let here = env!("CARGO_MANIFEST_DIR");
    let mut pointed = false;
    let lines: Vec<String> = toml
        .lines()
        .map(|line| {
            if line.split('=').next().map(str::trim) == Some("background-tasks") {
                pointed = true;
                format!("background-tasks = {{ path = {here:?} }}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(
        pointed && toml.starts_with("[dependencies]\n"),
        "the Quick start's ```toml block must be a [dependencies] table with a background-tasks line:\n{toml}"
    );
    lines.join("\n") + "\n"
}

/// `target/user-crates`, beside the workspace's own builds.
fn user_crates_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target directory")
        .join("user-crates")
}

fn cargo() -> PathBuf {
    std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Whether cargo runs here; `false` (with a note) outside CI, a panic
/// under `CI=true`.
fn cargo_available() -> bool {
    let cargo = cargo();
    let works = Command::new(&cargo)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !works {
        let message = format!(
            "the README examples are built as user crates with cargo, and {} does not run",
            cargo.display()
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("note: README example tests skipped: {message}");
    }
    works
}

/// Writes `path` only when its content changes, so cargo sees an unchanged
/// crate as fresh.
fn write_if_changed(path: &Path, content: &str) {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return;
    }
    std::fs::create_dir_all(path.parent().expect("a file in a directory"))
        .and_then(|()| std::fs::write(path, content))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `name = "x"` / `version = "y"` pairs of a Cargo.lock.
fn locked_packages(lock: &str) -> Vec<(String, String)> {
    let value = |line: &str, key: &str| {
        line.strip_prefix(key)
            .map(|rest| rest.trim_matches(|c| c == '"' || c == ' ').to_owned())
    };
    let mut packages = Vec::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = value(line, "name = ") {
            name = Some(n);
        } else if let (Some(v), Some(n)) = (value(line, "version = "), name.take()) {
            packages.push((n, v));
        }
    }
    packages
}

/// Builds `code` as the binary of a crate named `name` with the README's
/// dependencies, once per test run, and returns the binary's path.
fn build_user_crate(name: &str, code: &str) -> PathBuf {
    let root = user_crates_dir();
    let dir = root.join(name);
    let readme = readme();
    // The workspace builds sqlx-core and sqlx-postgres from vendor/ (the
    // TCP_NODELAY fix, unnamed statements behind a pooler:
    // vendor/README.md); so does this crate, as this checkout's own build
    // environment: the README's [dependencies] stay as a user copies them.
    let vendor = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor");
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         # A workspace of its own: it lies inside the background-tasks checkout.\n[workspace]\n\n{}\n\
         [patch.crates-io]\nsqlx-core = {{ path = {:?} }}\nsqlx-postgres = {{ path = {:?} }}\n",
        dependencies(&readme),
        vendor.join("sqlx-core").display().to_string(),
        vendor.join("sqlx-postgres").display().to_string()
    );
    write_if_changed(&dir.join("Cargo.toml"), &manifest);
    write_if_changed(&dir.join("src").join("main.rs"), code);
    let workspace_lock =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
            .expect("the workspace's Cargo.lock");
    write_if_changed(&dir.join("Cargo.lock"), &workspace_lock);

    let target = root.join("target");
    let started = Instant::now();
    let output = Command::new(cargo())
        .args(["build", "--offline", "--bin", name])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_TERM_COLOR", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("running cargo build in {}: {e}", dir.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the README's example {name} (in {}) does not build as a user's crate:\n{stderr}",
        dir.display()
    );
    eprintln!(
        "built {name} in {:.1} s (cold builds compile every dependency)",
        started.elapsed().as_secs_f64()
    );

    let ours = locked_packages(&workspace_lock);
    let user_lock =
        std::fs::read_to_string(dir.join("Cargo.lock")).expect("the crate's Cargo.lock");
    let added: Vec<String> = locked_packages(&user_lock)
        .into_iter()
        .filter(|(n, v)| n != name && !ours.iter().any(|(on, ov)| on == n && ov == v))
        .map(|(n, v)| format!("{n} {v}"))
        .collect();
    assert!(
        added.is_empty(),
        "the README's dependencies pull packages the workspace does not lock: {}. \
         A user would download them, and CI builds offline: change the README's [dependencies]",
        added.join(", ")
    );
    target.join("debug").join(name)
}

/// Each crate is built once per test run, whichever test needs it first;
/// the others wait for that build. `None` when cargo is unavailable.
fn built(cell: &'static OnceLock<Option<PathBuf>>, name: &str, heading: &str) -> Option<PathBuf> {
    cell.get_or_init(|| {
        // Read the block before looking for cargo: a broken README fails
        // even where the build is skipped.
        let code = program(&readme(), heading);
        cargo_available().then(|| build_user_crate(name, &code))
    })
    .clone()
}

fn quick_start() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    built(&BUILT, "readme-quick-start", "## Quick start")
}

fn embedded() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    built(
        &BUILT,
        "readme-embedded",
        "### Embedded in an actix-web app",
    )
}

/// A child process killed on drop, so a failing test leaves none behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Waits for the exit, at most `timeout`.
    fn wait(&mut self, timeout: Duration, log: impl Fn() -> String) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().expect("waiting for the example") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the example did not exit within {timeout:?}:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// The Quick start, run as `cargo run` would in a fresh directory: it
// enqueues one email, runs a runner for two seconds and prints the
// history. It installs no logger, so the runner says once on stderr how to
// see its logs.
#[actix_rt::test]
async fn readme_quick_start_runs_its_task_as_a_user_crate() {
    let Some(binary) = quick_start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a working directory");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut app = Running(
        Command::new(&binary)
            .current_dir(dir.path())
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display())),
    );
    let output = || format!("stdout:\n{}\nstderr:\n{}", read(&stdout), read(&stderr));
    let status = app.wait(Duration::from_secs(120), output);
    assert!(
        status.success(),
        "the Quick start exited with {status}:\n{}",
        output()
    );

    let printed = read(&stdout);
    assert!(
        printed
            .lines()
            .any(|line| line.starts_with("mail.send done at ")),
        "the Quick start did not print its completed task:\n{}",
        output()
    );
    let notes = read(&stderr).matches(NO_LOGGER_NOTE).count();
    assert_eq!(
        notes,
        1,
        "the runner's note about its logs, once:\n{}",
        output()
    );
    assert!(
        read(&stderr).contains("tracing_subscriber::fmt().init()"),
        "{}",
        output()
    );

    // What it wrote: the SQLite file in the working directory.
    let url = format!(
        "sqlite://{}",
        dir.path().join("background_tasks.sqlite3").display()
    );
    let db = Database::connect(&url)
        .await
        .expect("the Quick start's database");
    let done = completed_task::Entity::find()
        .all(&db)
        .await
        .expect("reading the history");
    assert_eq!(done.len(), 1, "one history row: {done:?}");
    assert_eq!(done[0].task_name, "mail.send");
    assert_eq!(done[0].queue.as_deref(), Some("mail"));
    assert!(!done[0].failed(), "the email task succeeded: {:?}", done[0]);
    assert_eq!(
        done[0].task_params,
        r#"[[], {"subject": "hi", "to": "ada@example.com"}]"#
    );
    db.close().await.ok();
}

on_all_backends!(readme_embedded_app_runs_a_posted_task_as_a_user_crate);

// The embedded example, run as a user's app on a free port with
// DATABASE_URL: a POST enqueues a receipt in the handler's transaction, and
// the runner in the same process completes it. The example installs a
// subscriber, so the task shows in its log, and the runner has no note to
// print. SIGTERM stops the server and the runner, with exit status 0.
async fn readme_embedded_app_runs_a_posted_task_as_a_user_crate(t: TestDb) -> TestDb {
    let Some(binary) = embedded() else {
        return t;
    };
    let dir = tempfile::tempdir().expect("a working directory");
    let log = dir.path().join("stderr");
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let mut app = Running(
        Command::new(&binary)
            .current_dir(dir.path())
            .env("DATABASE_URL", &t.url)
            .env("BIND", format!("127.0.0.1:{port}"))
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display())),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if let Some(status) = app.0.try_wait().expect("polling the example") {
            panic!(
                "the example exited with {status} before it listened:\n{}",
                read(&log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "the example did not listen on {port} within 60 s:\n{}",
            read(&log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let answer = post(port, "/orders");
    assert!(
        answer.starts_with("HTTP/1.1 202"),
        "POST /orders answered {answer:?}:\n{}",
        read(&log)
    );
    let db = t.db.clone();
    wait_for(
        "the posted receipt in the history",
        Duration::from_secs(30),
        || {
            let db = db.clone();
            async move {
                completed_task::Entity::find()
                    .filter(completed_task::Column::TaskName.eq("shop.send_receipt"))
                    .one(&db)
                    .await
                    .expect("reading the history")
                    .is_some()
            }
        },
    )
    .await;
    let done = completed_task::Entity::find()
        .all(&t.db)
        .await
        .expect("reading the history");
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(
        !done[0].failed(),
        "the receipt task succeeded: {:?}",
        done[0]
    );
    assert_eq!(done[0].task_params, "[[42], {}]");

    let pid = libc::pid_t::try_from(app.0.id()).expect("a pid fits in pid_t");
    // SAFETY: kill(2) takes no pointers; the pid is our own child's.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = app.wait(Duration::from_secs(60), || read(&log));
    let log = read(&log);
    assert!(
        status.success(),
        "the example exited with {status} after SIGTERM:\n{log}"
    );
    assert!(
        log.contains("runner started"),
        "the subscriber shows the runner:\n{log}"
    );
    assert!(
        log.contains("Ran task and deleting shop.send_receipt"),
        "the subscriber shows the task:\n{log}"
    );
    assert!(log.contains("runner stopped"), "{log}");
    assert!(
        !log.contains(NO_LOGGER_NOTE),
        "no note with a subscriber:\n{log}"
    );
    t
}

/// `POST path` with an empty body; the answer's status line.
fn post(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("sending the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("reading the answer");
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn readme_blocks_are_found_by_heading() {
    let readme = "## Quick start\n\n```toml\n[dependencies]\n```\n\n```sh\n# not a heading\n```\n\n```rust,no_run\nfn main() {}\n```\n## Next\n";
    assert_eq!(block(readme, "## Quick start", "toml"), "[dependencies]\n");
    assert_eq!(block(readme, "## Quick start", "rust"), "fn main() {}\n");
    assert_eq!(hidden_line("#[derive(Debug)]\n#![allow(x)]\n"), None);
    assert_eq!(
        hidden_line("fn f() {}\n    # fn main() {}\n"),
        Some((2, "    # fn main() {}"))
    );
    assert_eq!(hidden_line("#\n"), Some((1, "#")));
}
