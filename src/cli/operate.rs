//! The operator's commands: `list`, `show`, `stats`, `retry`,
//! `cancel`, `delete`. Each parses its flags, calls [`crate::inspect`] or
//! [`crate::admin`], and prints a table or JSON.

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};

use super::output::{self, Progress, Table};
use super::{Context, Failure};
use crate::admin;
use crate::config::Config;
use crate::entity::{completed_task, task};
use crate::inspect::{self, Cursor, Filter, QueueFilter, Row, State};
use crate::params;

/// The filters shared by `list`, `retry`, `cancel` and `delete`.
#[derive(Debug, Default, Args)]
pub(super) struct FilterArgs {
    /// Named queue; `(default)` selects tasks without one.
    #[arg(long)]
    queue: Option<String>,
    /// Exact task name.
    #[arg(long)]
    name: Option<String>,
    /// Text in the task name or its params (matched literally).
    #[arg(long)]
    search: Option<String>,
    /// Only tasks whose run_at (for history rows: finish time) is at or
    /// after this UTC time: 2026-11-27 10:00, RFC 3339, or an age (30m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Only tasks whose run_at is before this time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
}

impl FilterArgs {
    fn is_empty(&self) -> bool {
        self.queue.is_none()
            && self.name.is_none()
            && self.search.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    /// The filter, after checking that a named queue exists.
    async fn filter(
        &self,
        conn: &DatabaseConnection,
        now: DateTime<Utc>,
    ) -> Result<Filter, Failure> {
        let since = self
            .since
            .as_deref()
            .map(|text| time("--since", text, now))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|text| time("--until", text, now))
            .transpose()?;
        let queue = QueueFilter::parse(self.queue.as_deref().unwrap_or_default());
        if let QueueFilter::Named(name) = &queue {
            let known = inspect::queues(conn).await?;
            if !known.iter().any(|q| q.as_deref() == Some(name.as_str())) {
                let names: Vec<&str> = known
                    .iter()
                    .map(|q| q.as_deref().unwrap_or(QueueFilter::DEFAULT_TOKEN))
                    .collect();
                return Err(Failure::BadInput(format!(
                    "no task has the queue {name:?}; queues in use: {}",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                )));
            }
        }
        Ok(Filter {
            queue,
            name: self.name.clone(),
            search: self.search.clone(),
            since,
            until,
        })
    }
}

fn now() -> DateTime<Utc> {
    Config::default().clock().now()
}

// ---- list -------------------------------------------------------------

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// pending, scheduled, running, failed or completed (default: every
    /// state, running first).
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
    /// At most this many rows.
    #[arg(long, default_value_t = 50)]
    limit: u64,
    /// Continue after this cursor (printed under a full page; needs --state).
    #[arg(long)]
    after: Option<String>,
}

/// States in the order a listing of every state shows them.
const LIST_ORDER: [State; 6] = [
    State::Running,
    State::Pending,
    State::Scheduled,
    State::SetAside,
    State::Failed,
    State::Completed,
];

/// What an [`Error`](crate::Error) says is wrong, without the option name
/// it carries (the caller names its flag).
pub(super) fn reason(err: crate::Error) -> String {
    match err {
        crate::Error::InvalidOption { reason, .. } => reason,
        err => err.to_string(),
    }
}

/// A time flag: [`inspect::parse_time`], its error naming `option`.
fn time(option: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Failure> {
    inspect::parse_time(text, now)
        .map_err(|err| Failure::BadInput(format!("{option}: {}", reason(err))))
}

pub(super) async fn list(ctx: &Context, args: ListArgs) -> Result<(), Failure> {
    let now = now();
    let state: Option<State> = args.state.as_deref().map(str::parse).transpose()?;
    let after: Option<Cursor> = args.after.as_deref().map(str::parse).transpose()?;
    if after.is_some() && state.is_none() {
        return Err(Failure::BadInput(
            "--after continues a listing of one --state; give that --state too".into(),
        ));
    }
    let conn = ctx.migrated_db().await?;
    let filter = args.filter.filter(&conn, now).await?;
    let limit = args.limit.clamp(1, inspect::MAX_PAGE);
    let mut rows: Vec<(State, Row)> = Vec::new();
    let mut unreadable = Vec::new();
    let mut next = None;
    for state in state.map_or_else(|| LIST_ORDER.to_vec(), |s| vec![s]) {
        let left = limit - rows.len() as u64;
        if left == 0 {
            break;
        }
        let page = inspect::list(&conn, state, &filter, after.as_ref(), left, now).await?;
        next = page.next;
        rows.extend(page.rows.into_iter().map(|row| (state, row)));
        unreadable.extend(page.unreadable);
    }
    // Rows that do not decode are listed apart, never a failed listing.
    if !ctx.json {
        for row in &unreadable {
            eprintln!("bgtasks: warning: {row}");
        }
    }
    if rows.is_empty() && unreadable.is_empty() {
        return Err(Failure::NothingMatched(match state {
            Some(state) => format!("no {state} task matches"),
            None if args.filter.is_empty() => "the queue is empty: no task in any state".to_owned(),
            None => "no task matches".to_owned(),
        }));
    }
    if ctx.json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|(state, row)| row_json(*state, row))
            .collect();
        output::json(&json!({
            "rows": rows,
            "next": next.filter(|_| state.is_some()).map(|c| c.to_string()),
            "unreadable": unreadable,
        }));
        return Ok(());
    }
    let mut table = Table::new(&[
        "id",
        "state",
        "task",
        "queue",
        "priority",
        "attempts",
        "run at / finished",
        "error",
    ]);
    for (state, row) in &rows {
        table.row(match row {
            Row::Task(t) => vec![
                t.id.to_string(),
                state.to_string(),
                t.task_name.clone(),
                t.queue.clone().unwrap_or_default(),
                t.priority.to_string(),
                t.attempts.to_string(),
                output::time(t.run_at),
                output::error_line(&t.last_error, 50),
            ],
            Row::Completed(c) => vec![
                c.id.to_string(),
                state.to_string(),
                c.task_name.clone(),
                c.queue.clone().unwrap_or_default(),
                c.priority.to_string(),
                c.attempts.to_string(),
                output::time(c.run_at),
                output::error_line(&c.last_error, 50),
            ],
        });
    }
    table.print();
    if let (Some(state), Some(next)) = (state, next) {
        println!("more: bgtasks list --state {state} --limit {limit} --after {next}");
    }
    Ok(())
}

fn row_json(state: State, row: &Row) -> Value {
    let mut value = serde_json::to_value(row).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.insert("state".into(), json!(state));
    }
    value
}

// ---- show -------------------------------------------------------------

#[derive(Debug, Args)]
pub(super) struct ShowArgs {
    /// Task id (a waiting or running task, else a history row).
    id: i32,
    /// The id is a history row's (failed or completed).
    #[arg(long)]
    history: bool,
}

pub(super) async fn show(ctx: &Context, args: ShowArgs) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let now = now();
    let waiting = if args.history {
        None
    } else {
        inspect::task(&conn, args.id).await?
    };
    if let Some(task) = waiting {
        let state = State::of_task(&task, now);
        let chain = inspect::chain(&conn, &task.task_name, &task.task_hash, 20).await?;
        if ctx.json {
            output::json(&json!({"state": state, "task": task, "chain": chain}));
            return Ok(());
        }
        print_fields(&[
            ("id", task.id.to_string()),
            ("state", state.to_string()),
            ("task", task.task_name.clone()),
            (
                "verbose name",
                task.verbose_name.clone().unwrap_or_default(),
            ),
            (
                "queue",
                task.queue
                    .clone()
                    .unwrap_or_else(|| QueueFilter::DEFAULT_TOKEN.into()),
            ),
            ("priority", task.priority.to_string()),
            ("run at", output::time(task.run_at)),
            ("attempts", task.attempts.to_string()),
            ("repeat", repeat_text(task.repeat, task.repeat_until)),
            (
                "locked by",
                task.locked_by.clone().unwrap_or_else(|| "-".into()),
            ),
            ("locked at", output::maybe_time(task.locked_at)),
            (
                "cancel requested",
                output::maybe_time(task.cancel_requested_at),
            ),
            ("policy", task.policy.clone().unwrap_or_else(|| "-".into())),
            (
                "creator",
                creator_text(task.creator_content_type_id, task.creator_object_id),
            ),
            ("hash", task.task_hash.clone()),
        ]);
        print_body(&task.task_params, &task.last_error);
        print_chain(&chain, now);
        return Ok(());
    }
    let Some(done) = inspect::completed(&conn, args.id).await? else {
        return Err(Failure::NothingMatched(format!(
            "there is no task {} (neither waiting, running, nor in the history)",
            args.id
        )));
    };
    let state = State::of_completed(&done);
    let chain = inspect::chain(&conn, &done.task_name, &done.task_hash, 20).await?;
    if ctx.json {
        output::json(&json!({"state": state, "completed": done, "chain": chain}));
        return Ok(());
    }
    print_fields(&[
        ("history id", done.id.to_string()),
        ("state", state.to_string()),
        ("task", done.task_name.clone()),
        (
            "verbose name",
            done.verbose_name.clone().unwrap_or_default(),
        ),
        (
            "queue",
            done.queue
                .clone()
                .unwrap_or_else(|| QueueFilter::DEFAULT_TOKEN.into()),
        ),
        ("priority", done.priority.to_string()),
        ("finished", output::time(done.run_at)),
        ("failed at", output::maybe_time(done.failed_at)),
        ("cancelled at", output::maybe_time(done.cancelled_at)),
        ("attempts", done.attempts.to_string()),
        ("repeat", repeat_text(done.repeat, done.repeat_until)),
        (
            "ran on",
            done.locked_by.clone().unwrap_or_else(|| "-".into()),
        ),
        ("started", output::maybe_time(done.locked_at)),
        (
            "creator",
            creator_text(done.creator_content_type_id, done.creator_object_id),
        ),
        ("hash", done.task_hash.clone()),
    ]);
    print_body(&done.task_params, &done.last_error);
    if let Some(result) = &done.result {
        println!("\nresult:\n{}", pretty_json(result));
    }
    print_chain(&chain, now);
    Ok(())
}

fn repeat_text(repeat: i64, until: Option<DateTime<Utc>>) -> String {
    match (repeat, until) {
        (0, _) => "never".into(),
        (every, None) => format!("every {every} s"),
        (every, Some(until)) => format!("every {every} s until {}", output::time(until)),
    }
}

fn creator_text(kind: Option<i32>, id: Option<u32>) -> String {
    match (kind, id) {
        (Some(kind), Some(id)) => format!("content type {kind}, object {id}"),
        _ => "-".into(),
    }
}

fn print_fields(fields: &[(&str, String)]) {
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in fields {
        println!("{key:>width$}: {value}");
    }
}

/// JSON text indented with its numbers as stored, or as it is, with why,
/// when it cannot be decoded.
fn pretty_json(text: &str) -> String {
    match params::pretty(text) {
        Ok(pretty) => pretty,
        Err(err) => format!("{text}\n(shown as stored: {err})"),
    }
}

fn print_body(params: &str, last_error: &str) {
    println!("\nparams:\n{}", pretty_json(params));
    if last_error.is_empty() {
        println!("\nlast error: none");
    } else {
        println!("\nlast error:\n{last_error}");
    }
}

fn print_chain(chain: &inspect::Chain, now: DateTime<Utc>) {
    if chain.waiting.len() + chain.history.len() <= 1 {
        return;
    }
    println!("\nruns with the same name and params (the repeat chain):");
    let mut table = Table::new(&["id", "state", "when", "attempts", "error"]);
    for task in &chain.waiting {
        table.row(vec![
            task.id.to_string(),
            State::of_task(task, now).to_string(),
            output::time(task.run_at),
            task.attempts.to_string(),
            output::error_line(&task.last_error, 50),
        ]);
    }
    for done in &chain.history {
        let state = if done.failed() { "failed" } else { "completed" };
        table.row(vec![
            format!("history {}", done.id),
            state.into(),
            output::time(done.run_at),
            done.attempts.to_string(),
            output::error_line(&done.last_error, 50),
        ]);
    }
    table.print();
}

// ---- stats ------------------------------------------------------------

#[derive(Debug, Args)]
pub(super) struct StatsArgs {
    /// Minutes of throughput to show, per minute.
    #[arg(long, default_value_t = 15)]
    minutes: u32,
    /// Seconds after its last heartbeat a runner counts as gone.
    #[arg(long, env = "BACKGROUND_TASK_LEASE", default_value_t = 30.0)]
    lease: f64,
}

pub(super) async fn stats(ctx: &Context, args: StatsArgs) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let now = now();
    let lease = super::seconds("--lease", args.lease)?;
    let minutes = args.minutes.clamp(1, 24 * 60);
    let overview = inspect::overview(&conn, now).await?;
    let throughput = inspect::throughput(&conn, now, TimeDelta::minutes(1), minutes).await?;
    let runners = admin::runners(&conn, lease, now).await?;
    let alive: Vec<_> = runners.iter().filter(|r| r.alive).collect();
    let succeeded: i64 = throughput.succeeded.iter().sum();
    let failed: i64 = throughput.failed.iter().sum();
    if ctx.json {
        output::json(&json!({
            "now": now,
            "counts": overview.counts,
            "oldest_due": overview.oldest_due,
            "oldest_due_age_seconds": overview.oldest_due_age().map(|a| a.as_seconds_f64()),
            "throughput": throughput,
            "runners_alive": alive.iter().map(|r| &r.runner).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let states = [
        State::Pending,
        State::Scheduled,
        State::Running,
        State::Failed,
        State::SetAside,
    ];
    let mut table = Table::new(&[
        "queue",
        "pending",
        "scheduled",
        "running",
        "failed",
        "set-aside",
    ]);
    for queue in overview.queues() {
        let mut row = vec![
            queue
                .clone()
                .unwrap_or_else(|| QueueFilter::DEFAULT_TOKEN.into()),
        ];
        for state in states {
            let count: i64 = overview
                .counts
                .iter()
                .filter(|c| c.queue == queue && c.state == state)
                .map(|c| c.count)
                .sum();
            row.push(count.to_string());
        }
        table.row(row);
    }
    if table.is_empty() {
        println!("no waiting, running or failed task");
    } else {
        table.print();
    }
    match (&overview.oldest_due, overview.oldest_due_age()) {
        (Some(task), Some(age)) => println!(
            "\noldest due task: {} {} (due for {} s)",
            task.id,
            task.task_name,
            age.num_seconds()
        ),
        _ => println!("\noldest due task: none (nothing is waiting past its time)"),
    }
    println!(
        "last {minutes} min: {succeeded} completed, {failed} failed ({:.1} per minute)",
        (succeeded + failed) as f64 / f64::from(minutes)
    );
    println!("runners alive: {}", alive.len());
    for status in alive {
        let r = &status.runner;
        println!(
            "  {} (pid {} on {}, queue {}, {} of {} slots busy, since {})",
            r.runner_id,
            r.pid,
            r.host,
            r.queue.as_deref().unwrap_or("every"),
            r.running,
            r.executors,
            output::time(r.started_at)
        );
    }
    Ok(())
}

// ---- retry, cancel, delete ---------------------------------------------

/// Which rows a bulk command acts on.
#[derive(Debug, Args)]
pub(super) struct Selection {
    /// Ids to act on.
    ids: Vec<i32>,
    /// Every row of the command's states, when no id or filter is given.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Ids to act on: the given ones, or every row of `states` matching the
/// filter (page by page: no statement reads the whole table at once).
async fn select(
    conn: &DatabaseConnection,
    selection: &Selection,
    states: &[State],
    now: DateTime<Utc>,
) -> Result<Vec<i32>, Failure> {
    if !selection.ids.is_empty() {
        if !selection.filter.is_empty() || selection.all {
            return Err(Failure::BadInput(
                "give ids or a filter (or --all), not both".into(),
            ));
        }
        return Ok(selection.ids.clone());
    }
    if selection.filter.is_empty() && !selection.all {
        return Err(Failure::BadInput(
            "say which tasks: give ids, a filter (--queue, --name, --search, --since, \
             --until), or --all"
                .into(),
        ));
    }
    let filter = selection.filter.filter(conn, now).await?;
    let mut ids = Vec::new();
    for state in states {
        let mut after = None;
        loop {
            let page = inspect::list(
                conn,
                *state,
                &filter,
                after.as_ref(),
                inspect::MAX_PAGE,
                now,
            )
            .await?;
            ids.extend(page.rows.iter().map(Row::id));
            // Rows that do not decode are selected too: deleting a broken
            // row is how an operator gets rid of it.
            ids.extend(
                page.unreadable
                    .iter()
                    .filter_map(|row| row.id.as_deref()?.parse::<i32>().ok()),
            );
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(ids)
}

/// Ids per batch of a bulk action: each batch is one transaction.
const BATCH: usize = 1_000;

/// Runs `act` over `ids` in batches, with progress; returns what each
/// batch returned, in order.
async fn in_batches<F, Fut>(
    ctx: &Context,
    label: &'static str,
    ids: &[i32],
    mut act: F,
) -> Result<Vec<i32>, Failure>
where
    F: FnMut(Vec<i32>) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Vec<i32>>>,
{
    let mut progress = Progress::new(
        label,
        Some(ids.len() as u64),
        ctx.json || ids.len() <= BATCH,
    );
    let mut changed = Vec::new();
    for (i, chunk) in ids.chunks(BATCH).enumerate() {
        changed.extend(act(chunk.to_vec()).await?);
        progress.set(((i + 1) * BATCH).min(ids.len()) as u64);
    }
    progress.finish();
    Ok(changed)
}

fn report(
    ctx: &Context,
    action: &str,
    asked: usize,
    changed: &[i32],
    what: &str,
    new_ids: bool,
) -> Result<(), Failure> {
    if changed.is_empty() {
        return Err(Failure::NothingMatched(format!(
            "none of the {asked} selected id(s) is {what}; nothing was changed"
        )));
    }
    if ctx.json {
        output::json(
            &json!({"action": action, "selected": asked, "changed": changed.len(), "ids": changed}),
        );
    } else {
        let ids: Vec<String> = changed.iter().take(20).map(i32::to_string).collect();
        let more = if changed.len() > 20 { ", …" } else { "" };
        let label = if new_ids { "new task ids" } else { "ids" };
        println!(
            "{action}: {} of {asked} selected ({label}: {}{more})",
            changed.len(),
            ids.join(", ")
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct RetryArgs {
    #[command(flatten)]
    selection: Selection,
    /// Put set-aside tasks back instead (rows a runner could not decode or
    /// whose outcome the database refused; see `list --state set-aside`):
    /// ids are task ids, and the tasks keep their id.
    #[arg(long)]
    set_aside: bool,
}

pub(super) async fn retry(ctx: &Context, args: RetryArgs) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let now = now();
    if args.set_aside {
        let ids = select(&conn, &args.selection, &[State::SetAside], now).await?;
        if ids.is_empty() {
            return Err(Failure::NothingMatched(
                "no set-aside task matches; nothing was put back".into(),
            ));
        }
        let put_back = in_batches(ctx, "putting back", &ids, |chunk| {
            let conn = conn.clone();
            async move { admin::put_back_set_aside(&conn, &chunk, now).await }
        })
        .await?;
        return report(
            ctx,
            "put back",
            ids.len(),
            &put_back,
            "a set-aside task",
            false,
        );
    }
    let ids = select(&conn, &args.selection, &[State::Failed], now).await?;
    if ids.is_empty() {
        return Err(Failure::NothingMatched(
            "no failed task matches; nothing was retried (a task the runner set aside: \
             `bgtasks retry --set-aside`)"
                .into(),
        ));
    }
    let retried = in_batches(ctx, "retrying", &ids, |chunk| {
        let conn = conn.clone();
        async move {
            Ok(admin::retry_failed(&conn, &chunk, now)
                .await?
                .iter()
                .map(|t| t.id)
                .collect())
        }
    })
    .await?;
    report(
        ctx,
        "retried",
        ids.len(),
        &retried,
        "a failed task in the history",
        true,
    )
}

#[derive(Debug, Args)]
pub(super) struct CancelArgs {
    #[command(flatten)]
    selection: Selection,
}

pub(super) async fn cancel(ctx: &Context, args: CancelArgs) -> Result<(), Failure> {
    let conn = ctx.migrated_db().await?;
    let now = now();
    let ids = select(
        &conn,
        &args.selection,
        &[State::Pending, State::Scheduled, State::Running],
        now,
    )
    .await?;
    if ids.is_empty() {
        return Err(Failure::NothingMatched(
            "no waiting or running task matches; nothing was cancelled".into(),
        ));
    }
    let stopping = std::cell::RefCell::new(Vec::new());
    let cancelled = in_batches(ctx, "cancelling", &ids, |chunk| {
        let conn = conn.clone();
        let stopping = &stopping;
        async move {
            let done = admin::cancel(&conn, &chunk, now).await?;
            stopping.borrow_mut().extend(done.stopping);
            Ok(done.cancelled.iter().map(|row| row.id).collect())
        }
    })
    .await?;
    let stopping = stopping.into_inner();
    if cancelled.is_empty() && stopping.is_empty() {
        return Err(Failure::NothingMatched(format!(
            "none of the {} selected id(s) is a waiting task or a running one not already \
             asked to stop; nothing was changed",
            ids.len()
        )));
    }
    if ctx.json {
        output::json(&json!({
            "action": "cancelled",
            "selected": ids.len(),
            "changed": cancelled.len() + stopping.len(),
            "ids": cancelled,
            "stopping": stopping,
        }));
    } else {
        let list = |ids: &[i32]| {
            let shown: Vec<String> = ids.iter().take(20).map(i32::to_string).collect();
            let more = if ids.len() > 20 { ", …" } else { "" };
            format!("{}{more}", shown.join(", "))
        };
        println!(
            "cancelled: {} waiting task(s) moved to the history (history ids: {})",
            cancelled.len(),
            list(&cancelled)
        );
        if !stopping.is_empty() {
            println!(
                "asked {} running task(s) to stop (ids: {}); their runners stop them within their \
                 cancel grace period and record them as cancelled",
                stopping.len(),
                list(&stopping)
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct DeleteArgs {
    /// The ids (or the --state) are history rows'.
    #[arg(long)]
    history: bool,
    /// With a filter or --all: delete rows in this state (pending,
    /// scheduled, failed or completed; running tasks are cancelled, not
    /// deleted).
    #[arg(long)]
    state: Option<String>,
    #[command(flatten)]
    selection: Selection,
}

pub(super) async fn delete(ctx: &Context, args: DeleteArgs) -> Result<(), Failure> {
    let state: Option<State> = args.state.as_deref().map(str::parse).transpose()?;
    let history = args.history || state.is_some_and(State::in_history);
    if args.selection.ids.is_empty() && state.is_none() {
        return Err(Failure::BadInput(
            "to delete by filter, say which --state (pending, scheduled, running, failed or completed)".into(),
        ));
    }
    let conn = ctx.migrated_db().await?;
    let now = now();
    let states: Vec<State> = state.into_iter().collect();
    let ids = select(&conn, &args.selection, &states, now).await?;
    if ids.is_empty() {
        return Err(Failure::NothingMatched(
            "no task matches; nothing was deleted".into(),
        ));
    }
    let existing = existing_ids(&conn, &ids, history).await?;
    if !history {
        // A running task's row belongs to its runner until it finishes.
        let running = admin::running_among(&conn, &existing).await?;
        if !running.is_empty() {
            let shown: Vec<String> = running.iter().take(20).map(i32::to_string).collect();
            let more = if running.len() > 20 { " …" } else { "" };
            return Err(Failure::BadInput(format!(
                "{} selected task(s) are running ({}{more}): deleting one would pull it from \
                 under its runner. Cancel them instead (bgtasks cancel {}{more}), or wait for \
                 them to finish; nothing was deleted",
                running.len(),
                shown.join(", "),
                shown.join(" ")
            )));
        }
    }
    let deleted = in_batches(ctx, "deleting", &existing, |chunk| {
        let conn = conn.clone();
        async move {
            if history {
                admin::delete_completed(&conn, &chunk).await?;
                return Ok(chunk);
            }
            let deleted = admin::delete_tasks(&conn, &chunk).await?;
            if deleted as usize == chunk.len() {
                return Ok(chunk);
            }
            // Claimed since the check above: left to its runner.
            let kept = admin::running_among(&conn, &chunk).await?;
            Ok(chunk.into_iter().filter(|id| !kept.contains(id)).collect())
        }
    })
    .await?;
    let what = if history {
        "a history row"
    } else {
        "a waiting or running task (use --history for history ids)"
    };
    report(ctx, "deleted", ids.len(), &deleted, what, false)
}

/// Which of `ids` exist, in the task table or (with `history`) the history.
async fn existing_ids(
    conn: &DatabaseConnection,
    ids: &[i32],
    history: bool,
) -> Result<Vec<i32>, Failure> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let mut found = Vec::new();
    for chunk in ids.chunks(BATCH) {
        let rows: Vec<i32> = if history {
            completed_task::Entity::find()
                .select_only()
                .column(completed_task::Column::Id)
                .filter(completed_task::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(conn)
                .await?
        } else {
            task::Entity::find()
                .select_only()
                .column(task::Column::Id)
                .filter(task::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(conn)
                .await?
        };
        found.extend(rows);
    }
    Ok(found)
}
