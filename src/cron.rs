//! Cron schedules stored in the database: "enqueue this task, with these
//! params, at every occurrence of this cron expression in this time zone".
//!
//! Every runner looks for due schedules when the earliest next occurrence
//! it knows of comes (its clock is checked every second), and at each
//! heartbeat (at most [`LATE_AFTER`] / 2 apart) for schedules created or
//! resumed elsewhere meanwhile; it enqueues each occurrence **once**,
//! however many runners are alive: the runner that moves a schedule's
//! `next_fire_at` on (a compare-and-set on the old value) enqueues it, in
//! the same transaction, and the task's unique key
//! (`cron:<schedule id>:<fire time>`) refuses a second row for the same
//! occurrence while the first lives. So a schedule needs no leader
//! election, and a runner that dies mid-way leaves nothing half done.
//!
//! ```no_run
//! use background_tasks::cron::{self, Missed, NewSchedule};
//! # use background_tasks::{Task, TaskContext, TaskError};
//! # struct Report;
//! # impl Task for Report {
//! #     type Params = String; type Output = ();
//! #     fn name() -> &'static str { "reports.daily" }
//! #     async fn run(&self, _: String, _: TaskContext) -> Result<(), TaskError> { Ok(()) }
//! # }
//! # async fn demo(db: sea_orm::DatabaseConnection) -> background_tasks::Result<()> {
//! let now = chrono::Utc::now();
//! // Every weekday at 07:30 in Paris (summer and winter time alike).
//! cron::create(
//!     &db,
//!     NewSchedule::new::<Report>("daily-report", "30 7 * * MON-FRI", &"sales".to_owned())
//!         .timezone("Europe/Paris")
//!         .queue("reports")
//!         .missed(Missed::RunOnce),
//!     now,
//! )
//! .await?;
//! cron::pause(&db, "daily-report").await?;
//! cron::resume(&db, "daily-report", now).await?;
//! for schedule in cron::list(&db).await? {
//!     println!("{} next at {}", schedule.name, schedule.next_fire_at);
//! }
//! cron::remove(&db, "daily-report").await?;
//! # Ok(()) }
//! ```
//!
//! **Expressions** have 5 fields (minute hour day-of-month month
//! day-of-week) or 6 with seconds first, plus `L`, `W`, `#` and the
//! `@hourly`-style aliases ([croner]'s syntax). **Time zones** are IANA names
//! (`UTC`, `America/New_York`); an occurrence in a daylight-saving gap
//! fires when the gap ends (02:30 on a night that jumps from 02:00 to 03:00
//! fires at 03:00), and one in an overlap fires once, at the first.
//!
//! **Late and missed occurrences.** A runner that gets to an occurrence
//! after its time, but within [`LATE_AFTER`] of it, enqueues it all the
//! same: one task per occurrence, each due at its own time. That happens to
//! every schedule created or resumed elsewhere: its `next_fire_at` is its
//! first occurrence after the creation or resume, and the runners see it
//! at their next heartbeat, up to [`LATE_AFTER`] / 2 later, so it fires from
//! that first occurrence on. A tick that comes a little late (a busy
//! database) loses nothing either. An occurrence that no runner enqueued
//! within [`LATE_AFTER`] of its time (every runner was down) is *missed*,
//! and only that is logged as a warning. After downtime a schedule never
//! enqueues a backlog of missed occurrences: [`Missed::Skip`] (the default)
//! enqueues nothing for them and waits for the next occurrence;
//! [`Missed::RunOnce`] enqueues one task for the latest of them at once,
//! unless an occurrence of the last [`LATE_AFTER`] is enqueued anyway.
//! Pausing skips the occurrences of the pause: a resumed schedule next
//! fires at its first occurrence after the resume.
//!
//! The seed's `repeat` is unchanged and independent: a repeat chain lives
//! in its task rows, a cron schedule in its own table.
//!
//! [croner]: https://docs.rs/croner

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ConnectionTrait, TransactionSession, TransactionTrait};
use serde::Serialize;

use crate::config::validate_queue_name;
use crate::entity::{schedule, task};
use crate::error::{Error, Result};
use crate::params::{self, ParamsError};
use crate::queue::{MAX_TASK_NAME_LEN, MAX_VERBOSE_NAME_LEN};
use crate::store::{self, enqueue, schedules};
use crate::task::Task;

/// An occurrence no runner enqueued within this of its time counts as
/// missed (see [`Missed`]); one enqueued sooner, however late, does not.
pub const LATE_AFTER: Duration = Duration::from_secs(60);

/// Longest schedule name.
pub const MAX_SCHEDULE_NAME_LEN: usize = 190;

/// What a schedule does about missed occurrences: those no runner enqueued
/// within [`LATE_AFTER`] of their time, because none was alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Enqueue nothing for them; wait for the next occurrence (default).
    #[default]
    Skip,
    /// Enqueue one task for the latest of them, at once (unless an
    /// occurrence after them, not missed, is enqueued anyway).
    RunOnce,
}

impl Missed {
    /// The stored text: `skip` or `run_once`.
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::RunOnce => "run_once",
        }
    }
}

impl FromStr for Missed {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "skip" => Ok(Missed::Skip),
            "run_once" | "run-once" => Ok(Missed::RunOnce),
            other => Err(Error::invalid(
                "missed",
                format!("{other:?} is not a missed-occurrence policy; use skip or run_once"),
            )),
        }
    }
}

/// A schedule to create: [`NewSchedule::new`] for a task type,
/// [`NewSchedule::call`] for a task by name, then the options.
#[derive(Debug)]
pub struct NewSchedule {
    name: String,
    task_name: String,
    params: std::result::Result<String, ParamsError>,
    cron: String,
    timezone: String,
    queue: Option<String>,
    priority: i32,
    verbose_name: Option<String>,
    missed: Missed,
}

impl NewSchedule {
    /// Schedule `name` enqueues task `T` with `params` at every occurrence
    /// of `cron` (in UTC unless [`NewSchedule::timezone`] says otherwise),
    /// in the queue of `T`'s definition unless [`NewSchedule::queue`] says
    /// otherwise.
    pub fn new<T: Task>(name: &str, cron: &str, params: &T::Params) -> Self {
        let mut schedule = Self::with_params(name, T::name(), cron, T::encode(params));
        schedule.queue = T::defaults().queue;
        schedule
    }

    /// Schedule `name` enqueues the task named `task_name` with positional
    /// `args` (a sequence or `()`) and keyword `kwargs` (a map, a struct or
    /// `()`), e.g. from the command line.
    pub fn call<A, K>(name: &str, task_name: &str, cron: &str, args: &A, kwargs: &K) -> Self
    where
        A: Serialize + ?Sized,
        K: Serialize + ?Sized,
    {
        Self::with_params(name, task_name, cron, params::encode_call(args, kwargs))
    }

    fn with_params(
        name: &str,
        task_name: &str,
        cron: &str,
        params: std::result::Result<String, ParamsError>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            task_name: task_name.to_owned(),
            params,
            cron: cron.to_owned(),
            timezone: "UTC".to_owned(),
            queue: None,
            priority: 0,
            verbose_name: None,
            missed: Missed::default(),
        }
    }

    /// IANA time zone the expression is read in (default `UTC`).
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// Queue of the enqueued tasks.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Priority of the enqueued tasks (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Verbose name of the enqueued tasks.
    pub fn verbose_name(mut self, name: impl Into<String>) -> Self {
        self.verbose_name = Some(name.into());
        self
    }

    /// What to do about occurrences missed because no runner was alive
    /// (default [`Missed::Skip`]).
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }
}

/// A parsed expression and time zone.
struct Timetable {
    cron: Cron,
    timezone: Tz,
}

impl Timetable {
    fn parse(expression: &str, timezone: &str) -> Result<Self> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|err| {
                Error::invalid(
                    "cron",
                    format!(
                        "{expression:?} is not a cron expression ({err}); give 5 fields \
                         (minute hour day-of-month month day-of-week), 6 with seconds first, \
                         or an alias such as @hourly"
                    ),
                )
            })?;
        let timezone = timezone.parse::<Tz>().map_err(|_| {
            Error::invalid(
                "timezone",
                format!("{timezone:?} is not an IANA time zone name, such as UTC or Europe/Paris"),
            )
        })?;
        Ok(Self { cron, timezone })
    }

    fn of(schedule: &schedule::Model) -> Result<Self> {
        Self::parse(&schedule.cron, &schedule.timezone)
    }

    /// The first occurrence strictly after `after`.
    fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.timezone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// Walks from the occurrence `from` to `now`, in one pass: the
    /// occurrences older than `late_after` (missed: counted up to
    /// [`COUNT_BOUND`], after which the walk jumps to the last hour before
    /// the cutoff instead of stepping through every occurrence of a long
    /// downtime), the newer ones up to `now` (each to enqueue), and the
    /// first after `now`.
    fn catch_up(&self, from: DateTime<Utc>, now: DateTime<Utc>, late_after: TimeDelta) -> CatchUp {
        let cutoff = now - late_after;
        let mut caught = CatchUp {
            missed: 0,
            latest_missed: None,
            on_time: Vec::new(),
            next: None,
        };
        let mut at = Some(from);
        while let Some(occurrence) = at
            && occurrence < cutoff
        {
            caught.missed += 1;
            caught.latest_missed = Some(occurrence);
            at = self.next_after(occurrence);
            if caught.missed == COUNT_BOUND
                && let Some(near) = self.next_after(cutoff - TimeDelta::hours(1))
                && near > occurrence
                && near < cutoff
            {
                at = Some(near);
            }
        }
        while let Some(occurrence) = at
            && occurrence <= now
        {
            caught.on_time.push(occurrence);
            at = self.next_after(occurrence);
        }
        caught.next = at;
        caught
    }
}

/// Occurrences counted one by one when catching up, at most.
const COUNT_BOUND: u64 = 10_000;

/// Where a schedule stands when a runner gets to it.
struct CatchUp {
    /// Occurrences older than [`LATE_AFTER`] (at least [`COUNT_BOUND`]
    /// when it reached it).
    missed: u64,
    /// The latest of them.
    latest_missed: Option<DateTime<Utc>>,
    /// The due occurrences within [`LATE_AFTER`], oldest first: late
    /// perhaps, but not missed.
    on_time: Vec<DateTime<Utc>>,
    /// The first occurrence after now, if any.
    next: Option<DateTime<Utc>>,
}

/// Creates a schedule; its first occurrence is the first after `now`.
/// Every value is checked first: a bad expression, time zone, queue or
/// name is an [`Error::InvalidOption`] that says what to give, and a name
/// already taken is refused.
pub async fn create<C: ConnectionTrait>(
    conn: &C,
    new: NewSchedule,
    now: DateTime<Utc>,
) -> Result<schedule::Model> {
    let task_params = new.params?;
    check_len("name", &new.name, MAX_SCHEDULE_NAME_LEN)?;
    check_len("task_name", &new.task_name, MAX_TASK_NAME_LEN)?;
    if let Some(queue) = &new.queue {
        validate_queue_name(queue)?;
    }
    if let Some(verbose_name) = &new.verbose_name
        && verbose_name.chars().count() > MAX_VERBOSE_NAME_LEN
    {
        return Err(Error::invalid(
            "verbose_name",
            format!("at most {MAX_VERBOSE_NAME_LEN} characters are allowed"),
        ));
    }
    let timetable = Timetable::parse(&new.cron, &new.timezone)?;
    let next_fire_at = timetable.next_after(now).ok_or_else(|| {
        Error::invalid(
            "cron",
            format!(
                "{:?} has no occurrence after {now}: it would never fire",
                new.cron
            ),
        )
    })?;
    if schedules::by_name(conn, &new.name).await?.is_some() {
        return Err(Error::invalid(
            "name",
            format!(
                "a schedule named {:?} exists already; remove it first, or pick another name",
                new.name
            ),
        ));
    }
    let row = schedule::ActiveModel {
        id: NotSet,
        name: Set(new.name),
        task_name: Set(new.task_name),
        task_params: Set(task_params),
        cron: Set(new.cron.trim().to_owned()),
        timezone: Set(timetable.timezone.name().to_owned()),
        queue: Set(new.queue),
        priority: Set(new.priority),
        verbose_name: Set(new.verbose_name),
        missed: Set(new.missed.as_str().to_owned()),
        paused: Set(false),
        next_fire_at: Set(next_fire_at),
        last_fired_at: Set(None),
        created_at: Set(crate::clock::to_db_precision(now)),
    };
    schedules::insert(conn, row).await
}

fn check_len(option: &'static str, value: &str, max: usize) -> Result<()> {
    let len = value.chars().count();
    if len == 0 || len > max {
        return Err(Error::invalid(
            option,
            format!("{len} characters; give 1 to {max}"),
        ));
    }
    Ok(())
}

/// Every schedule, by name.
pub async fn list<C: ConnectionTrait>(conn: &C) -> Result<Vec<schedule::Model>> {
    schedules::list(conn).await
}

/// The schedule called `name`.
pub async fn get<C: ConnectionTrait>(conn: &C, name: &str) -> Result<Option<schedule::Model>> {
    schedules::by_name(conn, name).await
}

/// Pauses the schedule called `name`: it enqueues nothing until resumed.
/// False when there is no such schedule.
pub async fn pause<C: ConnectionTrait>(conn: &C, name: &str) -> Result<bool> {
    let Some(schedule) = schedules::by_name(conn, name).await? else {
        return Ok(false);
    };
    schedules::set_paused(conn, schedule.id, true, None).await
}

/// Resumes the schedule called `name`; it next fires at its first
/// occurrence after `now` (the occurrences of the pause are skipped).
/// False when there is no such schedule.
pub async fn resume<C: ConnectionTrait>(conn: &C, name: &str, now: DateTime<Utc>) -> Result<bool> {
    let Some(schedule) = schedules::by_name(conn, name).await? else {
        return Ok(false);
    };
    let next = Timetable::of(&schedule)?.next_after(now);
    schedules::set_paused(conn, schedule.id, false, next).await
}

/// Removes the schedule called `name` (tasks it enqueued stay). False when
/// there is no such schedule.
pub async fn remove<C: ConnectionTrait>(conn: &C, name: &str) -> Result<bool> {
    schedules::remove(conn, name).await
}

/// The next `count` occurrences of `schedule` after `after`.
pub fn upcoming(
    schedule: &schedule::Model,
    after: DateTime<Utc>,
    count: usize,
) -> Result<Vec<DateTime<Utc>>> {
    let timetable = Timetable::of(schedule)?;
    let mut times = Vec::with_capacity(count);
    let mut at = after;
    while times.len() < count {
        let Some(next) = timetable.next_after(at) else {
            break;
        };
        times.push(next);
        at = next;
    }
    Ok(times)
}

/// What one look at the schedules did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fired {
    /// Tasks enqueued, one per occurrence.
    pub enqueued: Vec<task::Model>,
    /// Occurrences passed over as missed (see [`Missed`]).
    pub skipped: u64,
}

/// Enqueues the due occurrences of every schedule, as of `now`: one task
/// for each occurrence within [`LATE_AFTER`] of `now`, and for older ones
/// (missed) what the schedule's [`Missed`] says. Runners call this every
/// second; call it yourself to fire schedules without a runner (any number
/// of callers at once is safe: each occurrence is enqueued once). A
/// schedule whose stored expression no longer parses is logged and left
/// alone.
pub async fn enqueue_due<C>(conn: &C, now: DateTime<Utc>) -> Result<Fired>
where
    C: ConnectionTrait + TransactionTrait,
    C::Transaction: ConnectionTrait,
{
    let mut fired = Fired::default();
    let late_after = TimeDelta::from_std(LATE_AFTER).unwrap_or(TimeDelta::MAX);
    for schedule in schedules::due(conn, now).await? {
        let timetable = match Timetable::of(&schedule) {
            Ok(timetable) => timetable,
            Err(err) => {
                tracing::error!(schedule = schedule.name, "cannot fire this schedule: {err}");
                continue;
            }
        };
        let CatchUp {
            missed,
            latest_missed,
            on_time,
            next,
        } = timetable.catch_up(schedule.next_fire_at, now, late_after);
        // A schedule without any later occurrence parks at the end of
        // time (of every backend's datetime type).
        let next = next.unwrap_or_else(end_of_time);
        let Some(latest) = on_time.last().copied().or(latest_missed) else {
            continue; // due() returns only schedules with an occurrence by now
        };
        let run_once = schedule.missed.parse::<Missed>().ok() == Some(Missed::RunOnce);
        // Run-once runs the latest missed occurrence when no later one
        // runs anyway.
        let ran_missed = on_time.is_empty() && run_once;
        let due = if ran_missed { vec![latest] } else { on_time };
        let skipped = missed - u64::from(ran_missed);
        let txn = store::begin_write(conn).await?;
        if !schedules::advance(&txn, schedule.id, schedule.next_fire_at, next, latest).await? {
            // Another runner fired it first.
            txn.rollback().await?;
            continue;
        }
        let mut enqueued = Vec::with_capacity(due.len());
        for at in due {
            if let Some(task) = enqueue::insert_unique(&txn, occurrence_row(&schedule, at)).await? {
                enqueued.push((at, task));
            }
        }
        txn.commit().await?;
        if missed > 0 {
            tracing::warn!(
                schedule = schedule.name,
                missed,
                "occurrences of this schedule were missed: no runner enqueued them within {} s \
                 of their time (were all runners down?); {}",
                LATE_AFTER.as_secs(),
                if ran_missed {
                    "enqueued the latest of them once"
                } else if run_once {
                    "skipped them, as a later occurrence is enqueued"
                } else {
                    "skipped them"
                }
            );
        }
        fired.skipped += skipped;
        for (at, task) in enqueued {
            tracing::info!(
                schedule = schedule.name,
                task.id,
                "enqueued {} for the occurrence at {at}",
                task.task_name
            );
            fired.enqueued.push(task);
        }
    }
    Ok(fired)
}

fn end_of_time() -> DateTime<Utc> {
    use chrono::TimeZone;
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// The earliest next occurrence of any schedule not paused: when a runner
/// next needs to look.
pub(crate) async fn next_due<C: ConnectionTrait>(conn: &C) -> Result<Option<DateTime<Utc>>> {
    schedules::earliest(conn).await
}

/// The unique key of the task of `schedule`'s occurrence at `at`.
pub fn occurrence_key(schedule_id: i32, at: DateTime<Utc>) -> String {
    format!("cron:{schedule_id}:{}", at.timestamp())
}

/// The task row of `schedule`'s occurrence at `at`: due at `at`, keyed.
fn occurrence_row(schedule: &schedule::Model, at: DateTime<Utc>) -> task::Model {
    task::Model {
        id: 0,
        task_name: schedule.task_name.clone(),
        task_params: schedule.task_params.clone(),
        task_hash: params::task_hash(&schedule.task_name, &schedule.task_params),
        verbose_name: schedule.verbose_name.clone(),
        priority: schedule.priority,
        run_at: at,
        repeat: 0,
        repeat_until: None,
        queue: schedule.queue.clone(),
        attempts: 0,
        failed_at: None,
        last_error: String::new(),
        locked_by: None,
        locked_at: None,
        creator_content_type_id: None,
        creator_object_id: None,
        unique_key: Some(occurrence_key(schedule.id, at)),
        policy: None,
        cancel_requested_at: None,
        trace_context: None,
        limit_key: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn occurrences_follow_the_time_zone() {
        let paris = Timetable::parse("30 7 * * *", "Europe/Paris").unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            paris.next_after(utc(2026, 1, 10, 0, 0)),
            Some(utc(2026, 1, 10, 6, 30))
        );
        assert_eq!(
            paris.next_after(utc(2026, 7, 10, 0, 0)),
            Some(utc(2026, 7, 10, 5, 30))
        );
    }

    #[test]
    fn daylight_saving_gaps_and_overlaps() {
        let paris = Timetable::parse("30 2 * * *", "Europe/Paris").unwrap();
        // 29 March 2026: 02:00 jumps to 03:00, so 02:30 does not exist; it
        // fires when the gap ends, 03:00 local.
        assert_eq!(
            paris.next_after(utc(2026, 3, 28, 12, 0)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        // 25 October 2026: 02:30 happens twice (UTC+2, then UTC+1); it
        // fires once, at the first.
        let first = paris.next_after(utc(2026, 10, 24, 12, 0)).unwrap();
        assert_eq!(first, utc(2026, 10, 25, 0, 30));
        assert_eq!(paris.next_after(first), Some(utc(2026, 10, 26, 1, 30)));
    }

    #[test]
    fn seconds_are_optional() {
        let every_ten = Timetable::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_ten.next_after(utc(2026, 1, 1, 0, 0)),
            Some(utc(2026, 1, 1, 0, 0) + TimeDelta::seconds(10))
        );
    }

    #[test]
    fn catching_up_counts_the_missed_and_keeps_the_recent() {
        let minute = TimeDelta::seconds(60);
        let minutely = Timetable::parse("* * * * *", "UTC").unwrap();
        let from = utc(2026, 1, 1, 0, 0);
        let now = utc(2026, 1, 3, 5, 7) + TimeDelta::seconds(30);
        let caught = minutely.catch_up(from, now, minute);
        assert_eq!(caught.latest_missed, Some(utc(2026, 1, 3, 5, 6)));
        assert_eq!(caught.on_time, vec![utc(2026, 1, 3, 5, 7)]);
        assert_eq!(caught.next, Some(utc(2026, 1, 3, 5, 8)));
        assert_eq!(caught.missed, (2 * 24 + 5) * 60 + 7);
        let missed = |to| minutely.catch_up(from, to, minute).missed;
        assert_eq!(missed(from), 0);
        assert_eq!(
            missed(from + minute),
            0,
            "exactly LATE_AFTER late is on time"
        );
        assert_eq!(missed(utc(2026, 1, 1, 0, 9)), 8);
        // Past the bound: the walk jumps to the last hour, and still ends
        // at the latest occurrence.
        let long = minutely.catch_up(from, utc(2026, 3, 1, 0, 0), minute);
        assert_eq!(long.latest_missed, Some(utc(2026, 2, 28, 23, 58)));
        assert_eq!(
            long.on_time,
            vec![utc(2026, 2, 28, 23, 59), utc(2026, 3, 1, 0, 0)]
        );
        assert!(long.missed >= COUNT_BOUND);
    }

    #[test]
    fn a_schedule_seen_seconds_late_misses_nothing() {
        // Created at 12:00:00, first seen by a runner at 12:00:09.5: every
        // occurrence since its creation is late, none is missed.
        let every_second = Timetable::parse("* * * * * *", "UTC").unwrap();
        let created = utc(2026, 1, 1, 12, 0);
        let first = every_second.next_after(created).unwrap();
        let seen = created + TimeDelta::milliseconds(9_500);
        let caught = every_second.catch_up(first, seen, TimeDelta::seconds(60));
        assert_eq!(caught.missed, 0);
        assert_eq!(
            caught.on_time,
            (1..=9)
                .map(|s| created + TimeDelta::seconds(s))
                .collect::<Vec<_>>()
        );
        assert_eq!(caught.next, Some(created + TimeDelta::seconds(10)));
    }

    #[test]
    fn bad_input_says_what_to_give() {
        let err = Timetable::parse("every minute", "UTC").err().unwrap();
        assert!(err.to_string().contains("5 fields"), "{err}");
        let err = Timetable::parse("* * * * *", "Mars/Olympus").err().unwrap();
        assert!(err.to_string().contains("IANA"), "{err}");
        assert!("sometimes".parse::<Missed>().is_err());
        assert_eq!("run-once".parse::<Missed>().unwrap(), Missed::RunOnce);
    }
}
