//! Read-only views of the queue for operators: what the dashboard, the JSON
//! API, the metrics endpoint and the CLI show.
//!
//! - [`list`]: one page of tasks in a [`State`], filtered by queue, name,
//!   free text over name and params, and a time range. Pages are keyset
//!   paginated: pass the [`Page::next`] cursor to get the following page,
//!   and the [`Page::prev`] cursor to [`list_before`] to go back. No page
//!   counts the table, so browsing stays fast on millions of rows.
//! - [`overview`]: tasks per queue and state, the oldest due task, and the
//!   failed history (counted up to [`HISTORY_COUNT_CAP`]).
//! - [`throughput`]: completions and failures per time bucket.
//! - [`task`], [`completed`], [`chain`]: one task, and its repeat chain.
//!
//! States, at a given `now`:
//!
//! | state | table | rows |
//! |---|---|---|
//! | `pending` | `background_task` | unlocked, not failed, `run_at <= now` (due) |
//! | `scheduled` | `background_task` | unlocked, not failed, `run_at > now` (includes retries waiting out their backoff) |
//! | `running` | `background_task` | locked by a runner |
//! | `set-aside` | `background_task` | `failed_at` set: a row the runner could not decode, or whose outcome the database refused, put aside so the queue goes on (its `last_error` says why; `bgtasks retry` or "run now" puts it back) |
//! | `failed` | `background_task_completedtask` | `failed_at` set: failed permanently |
//! | `completed` | `background_task_completedtask` | `failed_at` empty: succeeded |

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use sea_orm::{ConnectionTrait, EntityTrait};
use serde::Serialize;

use crate::entity::{completed_task, task};
use crate::error::{Error, Result};
use crate::store::inspect::{self as sql, Direction};

/// Where a task is in its life. See the module docs for the exact rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Due and waiting for a runner.
    Pending,
    /// Waiting for its `run_at` (first run, retry backoff, or repeat).
    Scheduled,
    /// Locked by a runner.
    Running,
    /// Failed permanently (a history row with `failed_at`).
    Failed,
    /// Succeeded (a history row without `failed_at`).
    Completed,
    /// Put aside by a runner, still in the task table with `failed_at`
    /// set: a row it could not decode, or whose outcome the database
    /// refused. Never claimed again until an operator puts it back.
    #[serde(rename = "set-aside")]
    SetAside,
}

impl State {
    /// Every state, in the order a task usually moves through them.
    pub const ALL: [State; 6] = [
        State::Scheduled,
        State::Pending,
        State::Running,
        State::Completed,
        State::Failed,
        State::SetAside,
    ];

    /// Its lowercase name, as in URLs, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Scheduled => "scheduled",
            State::Running => "running",
            State::Failed => "failed",
            State::Completed => "completed",
            State::SetAside => "set-aside",
        }
    }

    /// Whether its rows are history rows (`background_task_completedtask`).
    pub fn in_history(self) -> bool {
        matches!(self, State::Failed | State::Completed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        State::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                Error::invalid(
                    "state",
                    format!(
                        "{text:?} is not a state; use one of pending, scheduled, running, \
                         failed, completed, set-aside"
                    ),
                )
            })
    }
}

impl State {
    /// The state of a waiting or running row at `now`.
    pub fn of_task(task: &task::Model, now: DateTime<Utc>) -> State {
        if task.locked_by.is_some() {
            State::Running
        } else if task.failed_at.is_some() {
            State::SetAside
        } else if task.run_at <= now {
            State::Pending
        } else {
            State::Scheduled
        }
    }

    /// The state of a history row.
    pub fn of_completed(completed: &completed_task::Model) -> State {
        if completed.failed() {
            State::Failed
        } else {
            State::Completed
        }
    }
}

/// Which named queue to show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum QueueFilter {
    /// Every queue (the default).
    #[default]
    Any,
    /// Only tasks without a named queue (`queue IS NULL`).
    Default,
    /// Only this named queue.
    Named(String),
}

impl QueueFilter {
    /// How the default (unnamed) queue is written in URLs and on the
    /// command line.
    pub const DEFAULT_TOKEN: &'static str = "(default)";

    /// From a URL or command-line value: empty is [`QueueFilter::Any`],
    /// `(default)` is [`QueueFilter::Default`].
    pub fn parse(text: &str) -> Self {
        match text {
            "" => QueueFilter::Any,
            Self::DEFAULT_TOKEN => QueueFilter::Default,
            name => QueueFilter::Named(name.to_owned()),
        }
    }

    /// The value [`QueueFilter::parse`] reads back.
    pub fn token(&self) -> &str {
        match self {
            QueueFilter::Any => "",
            QueueFilter::Default => Self::DEFAULT_TOKEN,
            QueueFilter::Named(name) => name,
        }
    }
}

/// What to select within a state. Every field narrows; the default selects
/// everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Named queue.
    pub queue: QueueFilter,
    /// Exact task name.
    pub name: Option<String>,
    /// Text contained in the task name or its params (the seed admin's
    /// search), matched literally (`%` and `_` are not wildcards) and
    /// without regard to case on every backend (SQLite folds ASCII letters
    /// only).
    pub search: Option<String>,
    /// `run_at` at or after this time (for history rows: finished at or after).
    pub since: Option<DateTime<Utc>>,
    /// `run_at` before this time.
    pub until: Option<DateTime<Utc>>,
}

/// Where the next page starts: the sort keys of the last row shown.
/// Opaque in URLs: written and read with `Display` / `FromStr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub(crate) priority: i32,
    pub(crate) at: DateTime<Utc>,
    pub(crate) id: i32,
}

impl Cursor {
    fn of_task(state: State, task: &task::Model) -> Self {
        let at = match state {
            State::Running => task.locked_at.unwrap_or(task.run_at),
            _ => task.run_at,
        };
        Cursor {
            priority: task.priority,
            at,
            id: task.id,
        }
    }

    fn of_completed(completed: &completed_task::Model) -> Self {
        Cursor {
            priority: completed.priority,
            at: completed.run_at,
            id: completed.id,
        }
    }

    fn of_row(state: State, row: &Row) -> Self {
        match row {
            Row::Task(task) => Cursor::of_task(state, task),
            Row::Completed(completed) => Cursor::of_completed(completed),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}",
            self.id,
            self.at.timestamp_micros(),
            self.priority
        )
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "after",
                format!(
                    "{text:?} is not a page cursor; use the `next` or `prev` value of a listing"
                ),
            )
        };
        let mut parts = text.split('_');
        let (Some(id), Some(micros), Some(priority), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Cursor {
            id: id.parse().map_err(|_| bad())?,
            at: DateTime::from_timestamp_micros(micros)
                .filter(|at| is_storable(*at))
                .ok_or_else(bad)?,
            priority: priority.parse().map_err(|_| bad())?,
        })
    }
}

/// One listed row: a waiting or running task, or a history row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Row {
    /// A row of `background_task`.
    Task(task::Model),
    /// A row of `background_task_completedtask`.
    Completed(completed_task::Model),
}

impl Row {
    /// Its id (in its own table).
    pub fn id(&self) -> i32 {
        match self {
            Row::Task(t) => t.id,
            Row::Completed(c) => c.id,
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The state listed.
    pub state: State,
    /// The rows, in the state's order: pending in claim order, scheduled by
    /// `run_at`, running by `locked_at`, history newest first.
    pub rows: Vec<Row>,
    /// Cursor of the next page; `None` on the last page.
    pub next: Option<Cursor>,
    /// Cursor of the previous page, for [`list_before`]; `None` on the
    /// first page.
    pub prev: Option<Cursor>,
    /// Rows of this page that cannot be decoded (a value of the wrong type
    /// or out of range, written by hand or by another program): each names
    /// its id, column and value. They are not in `rows`.
    pub unreadable: Vec<crate::error::UnreadableRow>,
}

/// Most rows one page may hold.
pub const MAX_PAGE: u64 = 500;

/// One page of tasks in `state` matching `filter`, starting after `after`
/// (the first page when `None`), at most `limit` rows (1 to [`MAX_PAGE`]).
pub async fn list<C: ConnectionTrait>(
    conn: &C,
    state: State,
    filter: &Filter,
    after: Option<&Cursor>,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<Page> {
    let limit = limit.clamp(1, MAX_PAGE);
    let from = after.map(|cursor| (cursor, Direction::Forward));
    let (rows, more, unreadable) = fetch(conn, state, filter, from, limit, now).await?;
    // A page after a cursor has rows before it: those of the page the
    // cursor came from, or, if they are gone since, whatever is before;
    // `list_before` lands on the first page when nothing is.
    let prev = match rows.first() {
        Some(first) if after.is_some() => Some(Cursor::of_row(state, first)),
        _ => None,
    };
    let next = match rows.last() {
        Some(last) if more => Some(Cursor::of_row(state, last)),
        _ => None,
    };
    Ok(Page {
        state,
        rows,
        next,
        prev,
        unreadable,
    })
}

/// The page of tasks in `state` matching `filter` that ends just before
/// `before` (a [`Page::prev`] cursor): the previous page, in the state's
/// order. When fewer than `limit` rows come before the cursor (the start
/// of the list, or rows gone since), it is the first page, as [`list`]
/// gives it with no cursor, so going back always ends on a full first
/// page.
pub async fn list_before<C: ConnectionTrait>(
    conn: &C,
    state: State,
    filter: &Filter,
    before: &Cursor,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<Page> {
    let limit = limit.clamp(1, MAX_PAGE);
    let from = Some((before, Direction::Backward));
    let (mut rows, more, unreadable) = fetch(conn, state, filter, from, limit, now).await?;
    if !more {
        return list(conn, state, filter, None, limit, now).await;
    }
    // Fetched nearest first, walking backward: shown in the state's order.
    rows.reverse();
    let prev = rows.first().map(|first| Cursor::of_row(state, first));
    // The cursor's own row, and any after it, come next.
    let next = rows.last().map(|last| Cursor::of_row(state, last));
    Ok(Page {
        state,
        rows,
        next,
        prev,
        unreadable,
    })
}

/// Up to `limit` rows past `from` (from the start when `None`), and
/// whether more follow.
async fn fetch<C: ConnectionTrait>(
    conn: &C,
    state: State,
    filter: &Filter,
    from: Option<(&Cursor, Direction)>,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<(Vec<Row>, bool, Vec<crate::error::UnreadableRow>)> {
    // One row more than asked says whether there is more.
    let (rows, unreadable) = if state.in_history() {
        let (rows, unreadable) =
            sql::page::<completed_task::Entity, _>(conn, state, filter, from, limit + 1, now)
                .await?;
        (rows.into_iter().map(Row::Completed).collect(), unreadable)
    } else {
        let (rows, unreadable) =
            sql::page::<task::Entity, _>(conn, state, filter, from, limit + 1, now).await?;
        (
            rows.into_iter().map(Row::Task).collect::<Vec<_>>(),
            unreadable,
        )
    };
    let more = (rows.len() + unreadable.len()) as u64 > limit;
    let mut rows = rows;
    rows.truncate(limit as usize);
    Ok((rows, more, unreadable))
}

/// Failed history rows are counted up to this many in all (across queues)
/// in [`overview`]: an unbounded history table is not scanned whole.
pub const HISTORY_COUNT_CAP: u64 = 100_000;

/// Tasks in one queue and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StateCount {
    /// Named queue; `None` for the default queue.
    pub queue: Option<String>,
    /// The state.
    pub state: State,
    /// How many; for history states at most [`HISTORY_COUNT_CAP`].
    pub count: i64,
}

/// The queue at a glance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Overview {
    /// When it was taken.
    pub now: DateTime<Utc>,
    /// Waiting and running tasks per queue and state, and failed history
    /// rows per queue (capped).
    pub counts: Vec<StateCount>,
    /// The due task that has waited longest.
    pub oldest_due: Option<task::Model>,
}

impl Overview {
    /// Total in `state` across queues.
    pub fn total(&self, state: State) -> i64 {
        self.counts
            .iter()
            .filter(|c| c.state == state)
            .map(|c| c.count)
            .sum()
    }

    /// How long the oldest due task has waited.
    pub fn oldest_due_age(&self) -> Option<TimeDelta> {
        self.oldest_due
            .as_ref()
            .map(|task| (self.now - task.run_at).max(TimeDelta::zero()))
    }

    /// The queues seen, default queue first.
    pub fn queues(&self) -> Vec<Option<String>> {
        let mut queues: Vec<Option<String>> = self.counts.iter().map(|c| c.queue.clone()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}

/// Counts per queue and state, and the oldest due task, at `now`.
pub async fn overview<C: ConnectionTrait>(conn: &C, now: DateTime<Utc>) -> Result<Overview> {
    let mut counts: Vec<StateCount> = sql::counts(conn, now)
        .await?
        .into_iter()
        // Rows of the task table with failed_at set are the set-aside ones.
        .map(|(queue, state, count)| StateCount {
            queue,
            state,
            count,
        })
        .collect();
    for (queue, count) in sql::failed_counts(conn, HISTORY_COUNT_CAP).await? {
        counts.push(StateCount {
            queue,
            state: State::Failed,
            count,
        });
    }
    Ok(Overview {
        now,
        counts,
        oldest_due: sql::oldest_due(conn, now).await?,
    })
}

/// Tasks in each state across queues, history states counted up to
/// [`HISTORY_COUNT_CAP`] each: what the dashboard's navigation shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Every state of [`State::ALL`], in that order, with its count.
    pub counts: Vec<(State, i64)>,
}

impl Totals {
    /// How many tasks are in `state`.
    pub fn get(&self, state: State) -> i64 {
        self.counts
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, count)| *count)
    }

    /// Whether `state`'s count stopped at [`HISTORY_COUNT_CAP`]: there may
    /// be more.
    pub fn capped(&self, state: State) -> bool {
        state.in_history() && self.get(state) >= HISTORY_COUNT_CAP as i64
    }
}

/// Tasks in each state at `now`, across queues: one pass over the task
/// table, and a bounded count of each history state.
pub async fn totals<C: ConnectionTrait>(conn: &C, now: DateTime<Utc>) -> Result<Totals> {
    let waiting = sql::counts(conn, now).await?;
    let mut counts = Vec::with_capacity(State::ALL.len());
    for state in State::ALL {
        let count = match state {
            State::Failed | State::Completed => {
                sql::history_count(conn, state == State::Failed, HISTORY_COUNT_CAP).await?
            }
            _ => waiting
                .iter()
                .filter(|(_, s, _)| *s == state)
                .map(|(_, _, count)| count)
                .sum(),
        };
        counts.push((state, count));
    }
    Ok(Totals { counts })
}

/// Completions over a window, per bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Throughput {
    /// Start of the first bucket.
    pub start: DateTime<Utc>,
    /// Width of each bucket, in seconds.
    pub bucket_seconds: i64,
    /// Tasks that succeeded, per bucket.
    pub succeeded: Vec<i64>,
    /// Tasks that failed permanently, per bucket.
    pub failed: Vec<i64>,
}

/// Completions and permanent failures in the `buckets` buckets of width
/// `bucket` that end at `now` (the last bucket holds `now`).
pub async fn throughput<C: ConnectionTrait>(
    conn: &C,
    now: DateTime<Utc>,
    bucket: TimeDelta,
    buckets: u32,
) -> Result<Throughput> {
    let bucket = bucket.max(TimeDelta::seconds(1));
    let width = bucket.num_seconds();
    // Buckets aligned to whole multiples of their width, so that two
    // looks a few seconds apart show the same bars.
    let aligned = now.timestamp() - now.timestamp().rem_euclid(width);
    let start = DateTime::from_timestamp(aligned, 0).unwrap_or(now) - bucket * (buckets as i32 - 1);
    let mut succeeded = vec![0; buckets as usize];
    let mut failed = vec![0; buckets as usize];
    for (index, is_failed, count) in sql::completions(conn, start, bucket, buckets).await? {
        let series = if is_failed {
            &mut failed
        } else {
            &mut succeeded
        };
        series[index as usize] += count;
    }
    Ok(Throughput {
        start,
        bucket_seconds: width,
        succeeded,
        failed,
    })
}

/// Every queue in use by a waiting, running or history row, sorted;
/// `None` is the default (unnamed) queue.
pub async fn queues<C: ConnectionTrait>(conn: &C) -> Result<Vec<Option<String>>> {
    sql::queues(conn).await
}

/// The waiting or running task `id`.
///
/// A row that cannot be decoded is an [`Error::Unreadable`](crate::Error::Unreadable)
/// naming the column and its value.
pub async fn task<C: ConnectionTrait>(conn: &C, id: i32) -> Result<Option<task::Model>> {
    crate::store::rows::select_one(conn, task::Entity::find_by_id(id)).await
}

/// The history row `id`.
pub async fn completed<C: ConnectionTrait>(
    conn: &C,
    id: i32,
) -> Result<Option<completed_task::Model>> {
    crate::store::rows::select_one(conn, completed_task::Entity::find_by_id(id)).await
}

/// A repeat chain: every run of one task name with the same params.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// Rows still waiting or running (the next occurrence), soonest first.
    pub waiting: Vec<task::Model>,
    /// Earlier runs, newest first.
    pub history: Vec<completed_task::Model>,
}

/// The runs of `name` with `hash` (its repeat chain, or the earlier runs
/// of the same call), at most `limit` of each kind.
pub async fn chain<C: ConnectionTrait>(
    conn: &C,
    name: &str,
    hash: &str,
    limit: u64,
) -> Result<Chain> {
    let (waiting, history) = sql::chain(conn, name, hash, limit).await?;
    Ok(Chain { waiting, history })
}

/// The earliest time an operator may give: 0001-01-01 00:00:00 UTC.
fn earliest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(1, 1, 1)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MIN_UTC, |at| at.and_utc())
}

/// The latest time an operator may give: 9999-12-31 23:59:59.999999 UTC.
fn latest() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(9999, 12, 31)
        .and_then(|day| day.and_hms_micro_opt(23, 59, 59, 999_999))
        .map_or(DateTime::<Utc>::MAX_UTC, |at| at.and_utc())
}

/// Whether `at` lies in the years 1 to 9999, the range every backend
/// stores (MySQL's `DATETIME` ends at 9999, PostgreSQL's starts at 4713
/// BC).
pub(crate) fn is_storable(at: DateTime<Utc>) -> bool {
    (earliest()..=latest()).contains(&at)
}

/// `at`, when it [`is_storable`]; else an error saying so about `text`.
pub(crate) fn storable(at: DateTime<Utc>, text: &str) -> Result<DateTime<Utc>> {
    if is_storable(at) {
        Ok(at)
    } else {
        Err(Error::invalid(
            "time",
            format!(
                "{text:?} is {at}, outside the years 1 to 9999 that every database stores; give a \
                 time in that range"
            ),
        ))
    }
}

/// Reads a time given by an operator, in UTC: RFC 3339
/// (`2026-11-27T10:00:00Z`), `YYYY-MM-DD HH:MM[:SS]`, `YYYY-MM-DDTHH:MM`
/// (an HTML `datetime-local` input), `YYYY-MM-DD`, or an age before `now`
/// as [`parse_age`] reads it (`90m` is 90 minutes ago).
///
/// The time must lie in the years 1 to 9999 (what every backend stores);
/// anything else, including an age reaching back further, is an error,
/// never a panic.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return storable(at.with_timezone(&Utc), text);
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return storable(at.and_utc(), text);
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return storable(NaiveDateTime::from(day).and_utc(), text);
    }
    if looks_like_age(text) {
        let age = parse_age(text)?;
        return match now.checked_sub_signed(age) {
            Some(at) => storable(at, text),
            None => Err(Error::invalid(
                "time",
                format!("{text:?} reaches back before the year 1; give a shorter age"),
            )),
        };
    }
    Err(Error::invalid(
        "time",
        format!(
            "{text:?} is not a time; use 2026-11-27T10:00:00Z, 2026-11-27 10:00, 2026-11-27, \
             or an age such as 30s, 15m, 2h, 7d"
        ),
    ))
}

/// The units of an age, in seconds.
const AGE_UNITS: [(char, i64); 4] = [('s', 1), ('m', 60), ('h', 3_600), ('d', 86_400)];

/// Digits then a unit of [`AGE_UNITS`]: an age, if not too long.
fn looks_like_age(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next_back()
        .is_some_and(|unit| AGE_UNITS.iter().any(|(letter, _)| *letter == unit))
        && !chars.as_str().is_empty()
        && chars.as_str().bytes().all(|b| b.is_ascii_digit())
}

/// Reads a duration written as a whole number of seconds, minutes, hours
/// or days: `30s`, `15m`, `2h`, `7d`. At most [`crate::MAX_DURATION`]
/// (`36525d`, 100 years); a longer one is an error, as is anything else
/// (a sign, a fraction, another unit, spaces inside).
pub fn parse_age(text: &str) -> Result<TimeDelta> {
    let text = text.trim();
    let not_a_duration = || {
        Error::invalid(
            "duration",
            format!(
                "{text:?} is not a duration; use a whole number with s, m, h or d: 30s, 15m, \
                 2h, 7d"
            ),
        )
    };
    let mut chars = text.chars();
    let unit = chars.next_back().ok_or_else(not_a_duration)?;
    let digits = chars.as_str();
    let (_, unit_seconds) = AGE_UNITS
        .into_iter()
        .find(|(letter, _)| *letter == unit)
        .ok_or_else(not_a_duration)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_a_duration());
    }
    let max = crate::config::MAX_DURATION.as_secs();
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_seconds.unsigned_abs()))
        .filter(|seconds| *seconds <= max)
        .and_then(|seconds| TimeDelta::try_seconds(i64::try_from(seconds).ok()?))
        .ok_or_else(|| {
            Error::invalid(
                "duration",
                format!(
                    "{text:?} is longer than {}d (100 years), the longest a duration may be",
                    max / 86_400
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
        }
        assert_eq!(" Failed ".parse::<State>().unwrap(), State::Failed);
        let err = "done".parse::<State>().unwrap_err().to_string();
        assert!(err.contains("pending, scheduled"), "{err}");
    }

    #[test]
    fn cursors_read_back() {
        let cursor = Cursor {
            priority: -3,
            at: DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
            id: 42,
        };
        assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
        for bad in ["", "1_2", "a_1_2", "1_2_3_4", "1_99999999999999999999_0"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_filters_read_back() {
        for filter in [
            QueueFilter::Any,
            QueueFilter::Default,
            QueueFilter::Named("mail".into()),
        ] {
            assert_eq!(QueueFilter::parse(filter.token()), filter);
        }
    }

    #[test]
    fn times_in_every_accepted_form() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ten = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for text in [
            "2026-11-27T10:00:00Z",
            "2026-11-27T11:00:00+01:00",
            "2026-11-27 10:00",
            "2026-11-27 10:00:00",
            "2026-11-27T10:00",
            "2h",
            "120m",
        ] {
            assert_eq!(parse_time(text, now).unwrap(), ten, "{text}");
        }
        assert_eq!(
            parse_time("2026-11-27", now).unwrap(),
            ten - TimeDelta::hours(10)
        );
        for bad in ["yesterday", "-2h", "2w", "", "1é", "+2h", "2 h", "1.5h"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_out_of_range_are_errors_not_panics() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for (text, says) in [
            ("99999999d", "100 years"),
            ("9223372036854775807s", "100 years"),
            ("99999999999999999999999d", "100 years"),
            ("36526d", "100 years"),
            ("10000-01-01", "not a time"),
            ("9999-12-31T23:00:00-05:00", "years 1 to 9999"),
            ("0000-12-31T23:59:59Z", "years 1 to 9999"),
        ] {
            let err = parse_time(text, now).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        assert_eq!(
            parse_time("36525d", now).unwrap(),
            now - TimeDelta::days(36_525)
        );
        let year_50 = parse_time("0050-01-01", now).unwrap();
        assert!(parse_time("36525d", year_50).is_err());
        assert!("1_-62135596800000001_0".parse::<Cursor>().is_err());
        assert!("1_253402300800000000_0".parse::<Cursor>().is_err());
    }

    mod properties {
        //! Property tests of the operator's time and duration syntax: they
        //! run 256 cases each (`PROPTEST_CASES` asks for more).

        use proptest::prelude::*;

        use super::super::*;

        fn in_range() -> impl Strategy<Value = DateTime<Utc>> {
            (earliest().timestamp_micros()..=latest().timestamp_micros())
                .prop_map(|micros| DateTime::from_timestamp_micros(micros).unwrap())
        }

        fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
            (DateTime::<Utc>::MIN_UTC.timestamp()..=DateTime::<Utc>::MAX_UTC.timestamp())
                .prop_map(|seconds| DateTime::from_timestamp(seconds, 0).unwrap())
        }

        /// Text near the syntax: digits, signs, units, dates, junk.
        fn time_like() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[0-9]{0,25}[smhdwé ]?",
                "[+-]?[0-9]{1,7}-[0-9]{1,2}-[0-9]{1,2}([ T][0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2}(\\.[0-9]{0,12})?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?",
            ]
        }

        proptest! {
            #[test]
            fn parsing_never_panics(text in time_like(), now in any_time()) {
                let _ = parse_time(&text, now);
                let _ = parse_age(&text);
                let _ = text.parse::<Cursor>();
            }

            #[test]
            fn a_parsed_time_is_storable(text in time_like(), now in in_range()) {
                if let Ok(at) = parse_time(&text, now) {
                    prop_assert!(is_storable(at), "{text:?} gave {at}");
                }
            }

            #[test]
            fn ages_read_back_and_overflow_is_an_error(
                n in prop_oneof![any::<u64>(), 0..=3_155_760_000u64],
                unit in 0..4usize,
            ) {
                let (letter, seconds) = AGE_UNITS[unit];
                let text = format!("{n}{letter}");
                let max = crate::config::MAX_DURATION.as_secs();
                match n.checked_mul(seconds as u64).filter(|total| *total <= max) {
                    Some(total) => prop_assert_eq!(
                        parse_age(&text).unwrap(),
                        TimeDelta::seconds(total as i64)
                    ),
                    None => prop_assert!(parse_age(&text).is_err(), "{text}"),
                }
            }

            #[test]
            fn an_age_is_that_long_before_now(
                n in 0..=36_525u64 * 86_400,
                now in in_range(),
            ) {
                let text = format!("{n}s");
                let age = TimeDelta::seconds(n as i64);
                match now.checked_sub_signed(age).filter(|at| *at >= earliest()) {
                    Some(at) => prop_assert_eq!(parse_time(&text, now).unwrap(), at),
                    None => prop_assert!(parse_time(&text, now).is_err()),
                }
            }

            #[test]
            fn times_read_back(at in in_range(), now in in_range()) {
                prop_assert_eq!(parse_time(&at.to_rfc3339(), now).unwrap(), at);
                let naive = at.format("%Y-%m-%d %H:%M:%S%.f").to_string();
                prop_assert_eq!(parse_time(&naive, now).unwrap(), at);
            }

            #[test]
            fn cursors_read_back(id in any::<i32>(), at in in_range(), priority in any::<i32>()) {
                let cursor = Cursor { priority, at, id };
                prop_assert_eq!(cursor.to_string().parse::<Cursor>().unwrap(), cursor);
            }
        }
    }
}
