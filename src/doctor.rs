//! Health checks of a queue's database and its surroundings: what `bgtasks
//! doctor` prints, as a function your own tooling can call.
//!
//! [`check`] runs every check and returns one [`Finding`] per check, in
//! this order:
//!
//! | check | fails or warns when |
//! |---|---|
//! | `schema` | migrations have not run, or a table is missing (fail); the PostgreSQL notify trigger or the SQLite timestamp triggers are missing (warn) |
//! | `mode` | never: says whether Django's migrations created the two shared tables (a Django project shares the queue) or this crate did |
//! | `indexes` | says which index set the tables carry: Django's (a Django app shares the tables, or `bgtasks migrate --django-indexes` ran) or the lean set of the indexes the queue reads through; an index of that set is missing (fail); an index of another name that starts with the column (MySQL's foreign key index) stands in for a single-column one |
//! | `database` | the server is too old for `FOR UPDATE SKIP LOCKED` (fail); SQLite is not in WAL mode (warn) |
//! | `clock` | the database server's clock and this host's differ by more than [`Options::max_clock_skew`] (warn) |
//! | `runners` | due tasks have waited longer than the lease and no runner is alive (warn) |
//! | `unknown_tasks` | tasks due for longer than the lease have names no handler in the registry knows (warn) |
//! | `stale_locks` | tasks are locked, for longer than the lease, by runners that are gone (warn) |
//! | `time_zone` | finish, failure or lock times lie hours in the future as this process reads them: the database's naive timestamps are another zone's wall clock (a Django project with `USE_TZ = False`) than [`db::set_time_zone`] says (fail) |
//!
//! A check that needs a table the schema lacks is [`Status::Skip`]ped. A
//! statement that fails makes its check fail with the database's error;
//! the other checks still run.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use migration::{
    CLAIM_INDEX, COMPLETED_INDEXES, Migrator, MigratorTrait, NOTIFY_TRIGGER, TASK_INDEXES,
    lean_history_columns, lean_task_columns, partial_indexes,
};
use sea_orm::{DatabaseConnection, DbBackend};
use serde::Serialize;

use crate::admin;
use crate::clock::Clock;
use crate::config::DEFAULT_LEASE;
use crate::db;
use crate::error::Result;
use crate::registry::Registry;
use crate::store::doctor as sql;

/// Default largest difference between this host's clock and the database
/// server's that is not reported: 2 s.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(2);

/// How many ids of stale tasks a finding lists.
const LISTED_IDS: u64 = 10;

const TASKS: &str = "background_task";
const HISTORY: &str = "background_task_completedtask";
const RUNNERS: &str = "background_task_runner";

/// Every table the schema has once migrated.
const TABLES: [&str; 4] = [TASKS, HISTORY, RUNNERS, Migrator::MIGRATION_TABLE];

/// SQLite triggers of migration 5 that keep timestamps in Django's format.
const SQLITE_TIME_TRIGGERS: [&str; 4] = [
    "background_task_django_times_insert",
    "background_task_django_times_update",
    "background_task_completedtask_django_times_insert",
    "background_task_completedtask_django_times_update",
];

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// The queue works, but something deserves a look (its detail says what).
    Warn,
    /// The queue cannot work as it should until this is fixed.
    Fail,
    /// Not checked: a table it reads is missing (see the `schema` check).
    Skip,
}

impl Status {
    /// Its lowercase name, as printed and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check: `schema`, `indexes`, `database`, `clock`, `runners`,
    /// `unknown_tasks` or `stale_locks`.
    pub check: &'static str,
    /// How it came out.
    pub status: Status,
    /// What was found and, unless it is ok, what to do about it.
    pub detail: String,
}

impl Finding {
    /// A finding of `check`.
    pub fn new(check: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Self {
            check,
            status,
            detail: detail.into(),
        }
    }

    /// Whether it needs attention: anything but [`Status::Ok`].
    pub fn is_problem(&self) -> bool {
        self.status != Status::Ok
    }
}

/// Settings of the checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The runners' lease (default 30 s, [`DEFAULT_LEASE`]): a runner not
    /// seen for this long is taken for dead, a lock older than this whose
    /// runner is gone is stale, and a due task waiting longer than this
    /// is waiting for someone. Give the value your runners use.
    pub lease: Duration,
    /// Largest clock difference with the database server that is not
    /// reported (default 2 s, [`DEFAULT_MAX_CLOCK_SKEW`]).
    pub max_clock_skew: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            lease: DEFAULT_LEASE,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
        }
    }
}

/// Runs every check on `conn` (which may be unmigrated: that is reported,
/// never fixed) and returns one finding per check, in the order of the
/// module docs. `registry` holds the handlers of the runners you run, for
/// the `unknown_tasks` check. Reads the system clock; writes nothing.
pub async fn check(
    conn: &DatabaseConnection,
    registry: &Registry,
    options: &Options,
) -> Vec<Finding> {
    let now = Clock::system().now();
    let lease = TimeDelta::from_std(options.lease).unwrap_or(TimeDelta::MAX);
    let waited_since = now
        .checked_sub_signed(lease)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let present = sql::existing_tables(conn, &TABLES).await;
    let (present, schema) = match present {
        Ok(present) => {
            let schema = schema(conn, &present).await;
            (present, schema)
        }
        Err(err) => (Vec::new(), Err(err)),
    };
    let has = |table: &str| present.iter().any(|t| t == table);
    let needs = |tables: &[&str]| -> Option<Verdict> {
        let missing: Vec<&str> = tables.iter().copied().filter(|t| !has(t)).collect();
        (!missing.is_empty()).then(|| {
            verdict(
                Status::Skip,
                format!(
                    "not checked: it reads {}, which does not exist (see schema)",
                    missing.join(" and ")
                ),
            )
        })
    };
    let mut findings = vec![
        finding("schema", schema),
        finding("mode", mode(conn).await),
        finding("indexes", indexes(conn, &present).await),
        finding("database", database(conn).await),
        finding("clock", clock(conn, options.max_clock_skew).await),
    ];
    let runners_found = match needs(&[TASKS, RUNNERS]) {
        Some(skipped) => Ok(skipped),
        None => runners(conn, options.lease, now, lease).await,
    };
    findings.push(finding("runners", runners_found));
    let unknown = match needs(&[TASKS]) {
        Some(skipped) => Ok(skipped),
        None => unknown_tasks(conn, registry, waited_since, options.lease).await,
    };
    findings.push(finding("unknown_tasks", unknown));
    let stale = match needs(&[TASKS]) {
        Some(skipped) => Ok(skipped),
        None => {
            // Without the registry table (a database Django migrated, and
            // not this crate) no runner of ours is known alive.
            let alive = if has(RUNNERS) {
                alive_runners(conn, options.lease, now).await
            } else {
                Ok(HashSet::new())
            };
            match alive {
                Ok(alive) => stale_locks(conn, &alive, waited_since, options.lease).await,
                Err(err) => Err(err),
            }
        }
    };
    findings.push(finding("stale_locks", stale));
    let set_aside_found = match needs(&[TASKS]) {
        Some(skipped) => Ok(skipped),
        None => set_aside(conn).await,
    };
    findings.push(finding("set_aside", set_aside_found));
    let zone = match needs(&[TASKS, HISTORY]) {
        Some(skipped) => Ok(skipped),
        None => time_zone(conn, now).await,
    };
    findings.push(finding("time_zone", zone));
    findings
}

/// Times written as "now" (finish, failure, lock) must not lie in the
/// future as read here. Naive timestamps written as another zone's wall
/// clock (a Django project with `USE_TZ = False` and its `TIME_ZONE`) read
/// hours ahead when that zone is east of the one this process assumes; a
/// zone to the west is seen once this process assumes a zone east of it,
/// or by Django, whose `process_tasks` then finds Rust's tasks due late.
async fn time_zone(conn: &DatabaseConnection, now: DateTime<Utc>) -> Result<Verdict> {
    let zone = db::time_zone();
    if conn.get_database_backend() == DbBackend::Postgres {
        let note = if zone == "UTC" {
            String::new()
        } else {
            format!(" (BACKGROUND_TASK_DB_TIME_ZONE={zone} changes nothing here)")
        };
        return Ok(verdict(
            Status::Ok,
            format!(
                "PostgreSQL stores instants (timestamp with time zone), whatever the writer's                  time zone{note}"
            ),
        ));
    }
    // Beyond any clock skew or transaction length; under the smallest
    // offset between two zones that differ (15 min, rounded down).
    let margin = TimeDelta::minutes(10);
    let ahead: Vec<(&str, TimeDelta)> = sql::latest_now_times(conn)
        .await?
        .into_iter()
        .map(|(column, at)| (column, at - now))
        .filter(|(_, ahead)| *ahead > margin)
        .collect();
    let Some((column, by)) = ahead.iter().max_by_key(|(_, by)| *by) else {
        return Ok(verdict(
            Status::Ok,
            format!(
                "naive timestamps are read as {zone} wall-clock time, and no finish, failure or                  lock time lies in the future"
            ),
        ));
    };
    let hours = by.num_minutes() as f64 / 60.0;
    Ok(verdict(
        Status::Fail,
        format!(
            "{column} holds a time {} in the future when read as {zone} wall-clock time:              another writer stores naive timestamps in a zone about {hours:.1} h east of {zone}.              A Django project with USE_TZ = False writes its TIME_ZONE's wall clock: set              BACKGROUND_TASK_DB_TIME_ZONE (db::set_time_zone) to that zone, so both sides run              tasks when they are due",
            seconds(*by)
        ),
    ))
}

/// What one check found: its status and the detail.
type Verdict = (Status, String);

fn verdict(status: Status, detail: impl Into<String>) -> Verdict {
    (status, detail.into())
}

/// The finding of `check`, or a failure saying why it could not be made.
fn finding(check: &'static str, verdict: Result<Verdict>) -> Finding {
    match verdict {
        Ok((status, detail)) => Finding::new(check, status, detail),
        Err(err) => Finding::new(
            check,
            Status::Fail,
            format!(
                "could not check: {err}. Check that the database is reachable and that this \
                 user may read its catalog"
            ),
        ),
    }
}

/// Pending migrations and missing tables; the notify trigger on
/// PostgreSQL.
async fn schema(conn: &DatabaseConnection, present: &[String]) -> Result<Verdict> {
    let pending = db::pending_migrations(conn).await?;
    let missing: Vec<&str> = TABLES
        .into_iter()
        .filter(|table| !present.iter().any(|t| t == table))
        .collect();
    if !pending.is_empty() {
        let tables = if present.is_empty() {
            "no table of the queue exists yet".to_owned()
        } else {
            format!(
                "tables present: {}; missing: {}",
                present.join(", "),
                if missing.is_empty() {
                    "none".to_owned()
                } else {
                    missing.join(", ")
                }
            )
        };
        return Ok(verdict(
            Status::Fail,
            format!(
                "{} of {} migrations have not run ({}); {tables}. Run `bgtasks migrate` \
                 (runners started with `bgtasks process` also migrate)",
                pending.len(),
                Migrator::migrations().len(),
                pending.join(", "),
            ),
        ));
    }
    if !missing.is_empty() {
        return Ok(verdict(
            Status::Fail,
            format!(
                "every migration is recorded as run, but tables are missing: {}. They were \
                 dropped by hand: restore them from a backup, or roll back and migrate again \
                 (`bgtasks migrate down --all` drops every task, then `bgtasks migrate`)",
                missing.join(", ")
            ),
        ));
    }
    if sql::notify_trigger(conn, NOTIFY_TRIGGER).await? == Some(false) {
        return Ok(verdict(
            Status::Warn,
            format!(
                "migrations are up to date, but the trigger {NOTIFY_TRIGGER} on {TASKS} is \
                 missing: runners in other processes see new tasks only at their next poll \
                 (--sleep) instead of at once. Recreate it as migration \
                 m20261127_000004_notify_on_insert does: CREATE TRIGGER {NOTIFY_TRIGGER} AFTER \
                 INSERT ON {TASKS} FOR EACH STATEMENT EXECUTE FUNCTION {NOTIFY_TRIGGER}();"
            ),
        ));
    }
    if let Some(present) = sql::sqlite_triggers(conn, &SQLITE_TIME_TRIGGERS).await? {
        let missing: Vec<&str> = SQLITE_TIME_TRIGGERS
            .into_iter()
            .filter(|name| !present.iter().any(|p| p == name))
            .collect();
        if !missing.is_empty() {
            return Ok(verdict(
                Status::Warn,
                format!(
                    "migrations are up to date, but the triggers {} are missing (a table \
                     rebuilt by hand or by a Django migration drops them): a timestamp \
                     written in RFC 3339 by a plain SeaORM statement would sort wrong against \
                     Django's format. Roll back and reapply the last migration: `bgtasks \
                     migrate down` then `bgtasks migrate`",
                    missing.join(", ")
                ),
            ));
        }
    }
    Ok(verdict(
        Status::Ok,
        format!(
            "all {} migrations have run; tables {}",
            Migrator::migrations().len(),
            TABLES.join(", ")
        ),
    ))
}

/// Who created the two shared tables: Django's `background_task`
/// migrations, or this crate's.
async fn mode(conn: &DatabaseConnection) -> Result<Verdict> {
    Ok(match sql::django_migrations(conn).await? {
        Some(applied) if !applied.is_empty() => verdict(
            Status::Ok,
            format!(
                "shared with Django: its migrations created {TASKS} and {HISTORY} ({}); \
                 bgtasks uses them as they are and adds only its own index, runner table \
                 and triggers. Django's admin and process_tasks see the same queue",
                applied.join(", ")
            ),
        ),
        _ => verdict(
            Status::Ok,
            format!("bgtasks created {TASKS} and {HISTORY} (no Django migration recorded)"),
        ),
    })
}

/// Which index set the tables carry, and whether an index of it is
/// missing. Django's set (its 20 single-column indexes and the claim index)
/// is expected when a Django app shares the tables (its migrations are
/// recorded) or when all of Django's indexes are there (`bgtasks migrate
/// --django-indexes`); otherwise the lean set of migration 12, the indexes
/// the queue reads through.
async fn indexes(conn: &DatabaseConnection, present: &[String]) -> Result<Verdict> {
    let backend = conn.get_database_backend();
    let on_present =
        |(table, _, _): &(&str, &str, Option<&str>)| present.iter().any(|t| t == table);
    let django: Vec<Wanted> = TASK_INDEXES
        .iter()
        .map(|(column, name)| (TASKS, *name, Some(*column)))
        .chain([(TASKS, CLAIM_INDEX, None)])
        .chain(
            COMPLETED_INDEXES
                .iter()
                .map(|(column, name)| (HISTORY, *name, Some(*column))),
        )
        .filter(on_present)
        .collect();
    if django.is_empty() {
        return Ok(verdict(
            Status::Skip,
            format!("not checked: neither {TASKS} nor {HISTORY} exists (see schema)"),
        ));
    }
    let lean: Vec<Wanted> = django
        .iter()
        .copied()
        .filter(|(table, _, column)| match (*table, column) {
            (_, None) => true,
            (TASKS, Some(column)) => lean_task_columns(backend).contains(column),
            (_, Some(column)) => lean_history_columns(backend).contains(column),
        })
        .chain(
            partial_indexes(backend)
                .iter()
                .map(|(table, name, _)| (*table, *name, None)),
        )
        .filter(on_present)
        .collect();
    let found = sql::indexes(conn, &[TASKS, HISTORY]).await?;
    let shared = sql::django_migrations(conn)
        .await?
        .is_some_and(|applied| !applied.is_empty());
    let (missing_django, stand_ins) = missing(&found, &django);
    let django_set = shared || missing_django.is_empty();
    let (expected, missing, stand_ins) = if django_set {
        (&django, missing_django, stand_ins)
    } else {
        let (missing, stand_ins) = missing(&found, &lean);
        (&lean, missing, stand_ins)
    };
    let set = if django_set {
        "Django's index set (its single-column indexes and the claim index), which a Django app \
         sharing the tables needs"
            .to_owned()
    } else {
        format!(
            "the lean index set ({}), the indexes the queue reads through; Django's other \
             single-column indexes are left out because no Django app shares the tables. \
             Before a Django app attaches, run `bgtasks migrate --django-indexes`",
            expected
                .iter()
                .map(|(_, name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if missing.is_empty() {
        let mut detail = format!("all {} expected indexes are present: {set}", expected.len());
        if !stand_ins.is_empty() {
            detail.push_str(&format!(
                " (under another name, an index that starts with the column: {})",
                stand_ins.join(", ")
            ));
        }
        return Ok(verdict(Status::Ok, detail));
    }
    let names: Vec<String> = missing
        .iter()
        .map(|(table, name, _)| format!("{name} on {table}"))
        .collect();
    let fixes: Vec<String> = missing
        .iter()
        .map(|(table, name, column)| {
            let partial = partial_indexes(backend).iter().find(|(_, n, _)| n == name);
            match (column, partial) {
                (Some(column), _) => format!("CREATE INDEX {name} ON {table} ({column});"),
                (None, Some((_, _, definition))) => {
                    format!("CREATE INDEX {name} ON {table} {definition};")
                }
                (None, None) => format!(
                    "{CLAIM_INDEX}: as migration m20261127_000002_add_claim_index creates it"
                ),
            }
        })
        .collect();
    let also = if django_set {
        " (`bgtasks migrate --django-indexes` recreates Django's)"
    } else {
        ""
    };
    Ok(verdict(
        Status::Fail,
        format!(
            "missing: {} ({set}). Without them the claim, the admin's lists and the history's \
             pruning read whole tables, and grow slower with every row. Recreate them{also}: {}",
            names.join(", "),
            fixes.join(" ")
        ),
    ))
}

/// An index the doctor looks for: `(table, name, column)`, the column for a
/// single-column index.
type Wanted<'a> = (&'a str, &'a str, Option<&'a str>);

/// The indexes of `expected` that nothing in `found` serves, and the ones
/// served by an index of another name.
fn missing<'a>(found: &[sql::Index], expected: &[Wanted<'a>]) -> (Vec<Wanted<'a>>, Vec<String>) {
    let mut missing = Vec::new();
    let mut stand_ins = Vec::new();
    for wanted in expected {
        match index_for(found, wanted) {
            Some(index) if index.name.eq_ignore_ascii_case(wanted.1) => {}
            Some(index) => stand_ins.push(format!(
                "{} on {} by {}",
                wanted.2.unwrap_or_default(),
                wanted.0,
                index.name
            )),
            None => missing.push(*wanted),
        }
    }
    (missing, stand_ins)
}

/// The index that serves `(table, name, column)`: the one of that name,
/// or, for a single-column index, any index whose first column is that
/// column. MySQL gives a foreign key column the foreign key's own index,
/// named after the constraint, and Django then creates no index of its
/// usual name there; an index that starts with the column serves the same
/// lookups. MySQL may report names in another case than they were created
/// in.
fn index_for<'a>(
    found: &'a [sql::Index],
    (table, name, column): &(&str, &str, Option<&str>),
) -> Option<&'a sql::Index> {
    let on_table = || found.iter().filter(|i| i.table.eq_ignore_ascii_case(table));
    on_table()
        .find(|i| i.name.eq_ignore_ascii_case(name))
        .or_else(|| {
            let column = (*column)?;
            on_table().find(|i| {
                i.first_column
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(column))
            })
        })
}

/// The server's version (too old for the claim's `SKIP LOCKED`?), and
/// SQLite's journal mode.
async fn database(conn: &DatabaseConnection) -> Result<Verdict> {
    let version = sql::version(conn).await?;
    let backend = conn.get_database_backend();
    if let Some(mode) = sql::journal_mode(conn).await? {
        if mode.eq_ignore_ascii_case("wal") {
            return Ok(verdict(
                Status::Ok,
                format!("SQLite {version}, journal mode WAL"),
            ));
        }
        return Ok(verdict(
            Status::Warn,
            format!(
                "SQLite {version} in journal mode {mode}, not WAL: without WAL every write blocks \
                 every reader, so the dashboard and other processes wait on each claim and \
                 outcome, and busy moments end in \"database is locked\". This crate switches \
                 each file it opens to WAL; a file that stays out of it is in memory or on a file \
                 system without shared memory (a network share): keep the queue on a local disk"
            ),
        ));
    }
    let (product, needed, why) = match backend {
        DbBackend::Postgres => (
            "PostgreSQL",
            (11, 0, 0),
            "the notify trigger needs EXECUTE FUNCTION",
        ),
        _ if version.contains("MariaDB") => {
            ("MariaDB", (10, 6, 0), "claims use FOR UPDATE SKIP LOCKED")
        }
        _ => ("MySQL", (8, 0, 1), "claims use FOR UPDATE SKIP LOCKED"),
    };
    if version_at_least(&version, needed) == Some(false) {
        let (major, minor, patch) = needed;
        return Ok(verdict(
            Status::Fail,
            format!(
                "{product} {version} is too old: {why}, which needs {product} \
                 {major}.{minor}.{patch} or later. Upgrade the server"
            ),
        ));
    }
    Ok(verdict(Status::Ok, format!("{product} {version}")))
}

/// Whether the leading `major.minor.patch` of `version` is at least
/// `needed`; `None` when it does not start with a version number.
fn version_at_least(version: &str, needed: (u32, u32, u32)) -> Option<bool> {
    let numbers: Vec<u32> = version
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()?
        .split('.')
        .map_while(|part| part.parse().ok())
        .collect();
    let (major, minor, patch) = match numbers.as_slice() {
        [] => return None,
        [major] => (*major, 0, 0),
        [major, minor] => (*major, *minor, 0),
        [major, minor, patch, ..] => (*major, *minor, *patch),
    };
    Some((major, minor, patch) >= needed)
}

/// This host's clock against the database server's.
async fn clock(conn: &DatabaseConnection, max_skew: Duration) -> Result<Verdict> {
    let before = Utc::now();
    let Some(server) = sql::server_clock(conn).await? else {
        return Ok(verdict(
            Status::Ok,
            "SQLite runs in this process: the database's clock is this host's",
        ));
    };
    let after = Utc::now();
    // The server read its clock somewhere during the round trip: compare
    // with the middle, and forgive half the round trip.
    let round_trip = after - before;
    let skew = server - (before + round_trip / 2);
    let doubt = round_trip / 2;
    let beyond = skew.abs() - doubt;
    let allowed = TimeDelta::from_std(max_skew).unwrap_or(TimeDelta::MAX);
    let direction = if skew >= TimeDelta::zero() {
        "ahead of"
    } else {
        "behind"
    };
    let measured = format!(
        "the database server's clock is {} {direction} this host's (± {})",
        seconds(skew.abs()),
        seconds(doubt)
    );
    if beyond > allowed {
        return Ok(verdict(
            Status::Warn,
            format!(
                "{measured}, more than the {} allowed. Runners compare run_at with their own \
                 host's clock, and take locks older than the lease for expired: hosts whose \
                 clocks disagree run tasks early or late, and take over tasks that are still \
                 running. Synchronize every host's clock (NTP: chrony, systemd-timesyncd)",
                seconds(allowed)
            ),
        ));
    }
    Ok(verdict(Status::Ok, measured))
}

/// A time difference for people: `0.003 s`, `42 s`, `5 min`, `3 h`, `2 d`.
fn seconds(delta: TimeDelta) -> String {
    let secs = delta.num_milliseconds() as f64 / 1_000.0;
    match delta.num_seconds() {
        s if s < 10 => format!("{secs:.3} s"),
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3_600 => format!("{} min", s / 60),
        s if s < 2 * 86_400 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// Alive runners; warns when none is alive while tasks wait.
async fn runners(
    conn: &DatabaseConnection,
    lease: Duration,
    now: DateTime<Utc>,
    lease_delta: TimeDelta,
) -> Result<Verdict> {
    let runners = admin::runners(conn, lease, now).await?;
    let alive: Vec<String> = runners
        .iter()
        .filter(|r| r.alive)
        .map(|r| {
            format!(
                "{} (pid {} on {})",
                r.runner.runner_id, r.runner.pid, r.runner.host
            )
        })
        .collect();
    let dead = runners.len() - alive.len();
    let gone = match dead {
        0 => String::new(),
        n => format!(
            "; {n} registered runner(s) stopped renewing (they died or hung; their rows go \
             after a day)"
        ),
    };
    let oldest = crate::store::inspect::oldest_due(conn, now)
        .await?
        .filter(|task| now - task.run_at > lease_delta);
    match (alive.is_empty(), oldest) {
        (true, Some(task)) => Ok(verdict(
            Status::Warn,
            format!(
                "no runner is alive, and due tasks are waiting: the oldest, {} (id {}), has \
                 waited {}{gone}. Start one: `bgtasks process`, or your application's runner \
                 (a Django `process_tasks` runs them too, but does not register here)",
                task.task_name,
                task.id,
                seconds(now - task.run_at)
            ),
        )),
        (true, None) => Ok(verdict(
            Status::Ok,
            format!("no runner is alive, and no task has waited longer than the lease{gone}"),
        )),
        (false, oldest) => {
            let waiting = match oldest {
                Some(task) => format!(
                    "; the oldest due task has waited {} (more runners, or --threads, would \
                     catch up sooner)",
                    seconds(now - task.run_at)
                ),
                None => String::new(),
            };
            Ok(verdict(
                Status::Ok,
                format!("{} alive: {}{waiting}{gone}", alive.len(), alive.join(", ")),
            ))
        }
    }
}

/// Due task names no handler here knows.
async fn unknown_tasks(
    conn: &DatabaseConnection,
    registry: &Registry,
    waited_since: DateTime<Utc>,
    lease: Duration,
) -> Result<Verdict> {
    let unknown = admin::unhandled_due(conn, registry, waited_since).await?;
    let lease = seconds(TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX));
    if unknown.is_empty() {
        return Ok(verdict(
            Status::Ok,
            format!("every task due for longer than {lease} has a handler in this binary"),
        ));
    }
    let names: Vec<String> = unknown
        .iter()
        .map(|(name, count)| format!("{count} × {name}"))
        .collect();
    Ok(verdict(
        Status::Warn,
        format!(
            "due for longer than {lease}, with no handler in this binary: {}. They wait for a \
             runner that has one (a Django `process_tasks`, or your own binary that registers \
             them and calls `background_tasks::cli::main`). If none will run them any more, \
             `bgtasks cancel --name NAME` keeps them on record as failed",
            names.join(", ")
        ),
    ))
}

/// Tasks a runner set aside: rows it could not decode, or whose outcome
/// the database refused. They wait for an operator, never for a runner.
async fn set_aside(conn: &DatabaseConnection) -> Result<Verdict> {
    let (count, ids) = sql::set_aside(conn, 5).await?;
    if count == 0 {
        return Ok(verdict(Status::Ok, "no task is set aside"));
    }
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let more = if count > ids.len() as i64 {
        ", …"
    } else {
        ""
    };
    Ok(verdict(
        Status::Warn,
        format!(
            "{count} task(s) set aside by a runner (ids {}{more}): a row it could not decode, or \
             an outcome the database refused. `bgtasks list --state set-aside` shows why (their \
             last error names the column and value); correct the row, then `bgtasks retry \
             --set-aside ID` puts it back, or `bgtasks delete ID` drops it",
            ids.join(", ")
        ),
    ))
}

/// Stale locks, per owner: tasks locked before `locked_before` by an owner
/// that is gone ([`is_gone`]; `alive` holds the live runners' identities).
/// The doctor's `stale_locks` finding and the metrics'
/// `background_tasks_stale_locks` gauge both count these.
pub(crate) async fn stale_lock_owners<C: sea_orm::ConnectionTrait>(
    conn: &C,
    alive: &HashSet<String>,
    locked_before: DateTime<Utc>,
) -> Result<Vec<(String, i64)>> {
    let mut owners = sql::old_locks_by_owner(conn, locked_before).await?;
    owners.retain(|(owner, _)| is_gone(owner, alive));
    Ok(owners)
}

/// Identities of the runners seen within the lease.
async fn alive_runners(
    conn: &DatabaseConnection,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<HashSet<String>> {
    Ok(admin::runners(conn, lease, now)
        .await?
        .into_iter()
        .filter(|r| r.alive)
        .map(|r| r.runner.runner_id)
        .collect())
}

/// Tasks locked for longer than the lease by runners that are gone.
async fn stale_locks(
    conn: &DatabaseConnection,
    alive: &HashSet<String>,
    locked_before: DateTime<Utc>,
    lease: Duration,
) -> Result<Verdict> {
    let stale = stale_lock_owners(conn, alive, locked_before).await?;
    let lease = seconds(TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX));
    if stale.is_empty() {
        return Ok(verdict(
            Status::Ok,
            format!("no task is locked for longer than {lease} by a runner that is gone"),
        ));
    }
    let count: i64 = stale.iter().map(|(_, count)| count).sum();
    let names: Vec<&str> = stale.iter().map(|(owner, _)| owner.as_str()).collect();
    let ids = sql::old_locked_ids(conn, &names, locked_before, LISTED_IDS).await?;
    let ids: Vec<String> = ids.iter().map(i32::to_string).collect();
    let more = if count > ids.len() as i64 {
        ", …"
    } else {
        ""
    };
    Ok(verdict(
        Status::Warn,
        format!(
            "{count} task(s) locked for longer than {lease} by runners that are gone ({}): ids \
             {}{more}. Their runner died or hung. Any running runner takes them back when the \
             lock expires (the lease after the last renewal for this crate's runners, \
             MAX_RUN_TIME after locked_at for a Django `process_tasks`' bare PID), and they run \
             again. If they stay locked, no runner is running: see runners",
            names.join(", "),
            ids.join(", ")
        ),
    ))
}

/// Whether the runner that wrote `locked_by` is gone: this crate's
/// identities (`host:pid:random`) when they are not an alive registered
/// runner; a Django bare PID when that process is not running here
/// ([`admin::locked_by_pid_running`]); anything else always.
fn is_gone(locked_by: &str, alive: &HashSet<String>) -> bool {
    if alive.contains(locked_by) {
        return false;
    }
    if locked_by.contains(':') {
        return true;
    }
    admin::locked_by_pid_running(Some(locked_by)) != Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_their_leading_numbers() {
        assert_eq!(
            version_at_least("10.11.19-MariaDB-0+deb12u1", (10, 6, 0)),
            Some(true)
        );
        assert_eq!(version_at_least("10.5.2-MariaDB", (10, 6, 0)), Some(false));
        assert_eq!(version_at_least("8.0.36", (8, 0, 1)), Some(true));
        assert_eq!(version_at_least("5.7.44-log", (8, 0, 1)), Some(false));
        assert_eq!(
            version_at_least("15.20 (Debian 15.20-0+deb12u1)", (11, 0, 0)),
            Some(true)
        );
        assert_eq!(version_at_least("16beta1", (11, 0, 0)), Some(true));
        assert_eq!(version_at_least("devel", (11, 0, 0)), None);
    }

    #[test]
    fn differences_read_like_people_write_them() {
        assert_eq!(seconds(TimeDelta::milliseconds(3)), "0.003 s");
        assert_eq!(seconds(TimeDelta::seconds(42)), "42 s");
        assert_eq!(seconds(TimeDelta::minutes(5)), "5 min");
        assert_eq!(seconds(TimeDelta::hours(3)), "3 h");
        assert_eq!(seconds(TimeDelta::days(2)), "2 d");
    }

    #[test]
    fn an_index_that_starts_with_the_column_stands_in_for_a_single_column_one() {
        let index = |table: &str, name: &str, first: Option<&str>| sql::Index {
            table: table.into(),
            name: name.into(),
            first_column: first.map(Into::into),
        };
        let fk = "background_task_creator_content_type_61cc9af3_fk_django_co";
        let found = [
            index(TASKS, fk, Some("creator_content_type_id")),
            index(TASKS, "BACKGROUND_TASK_RUN_AT_7BACA3AA", Some("run_at")),
            index(TASKS, CLAIM_INDEX, None),
            index(HISTORY, "partial_on_queue", None),
        ];
        let named = |table, name, column| index_for(&found, &(table, name, column));
        let creator = "background_task_creator_content_type_id_61cc9af3";
        assert_eq!(
            named(TASKS, creator, Some("creator_content_type_id")).map(|i| i.name.as_str()),
            Some(fk),
            "MySQL's foreign key index"
        );
        assert!(named(TASKS, "background_task_run_at_7baca3aa", Some("run_at")).is_some());
        assert!(named(TASKS, CLAIM_INDEX, None).is_some());
        assert!(
            named(HISTORY, creator, Some("creator_content_type_id")).is_none(),
            "another table's index"
        );
        assert!(
            named(
                HISTORY,
                "background_task_completedtask_queue_61fb0415",
                Some("queue")
            )
            .is_none(),
            "a partial index does not stand in"
        );
        assert!(named(TASKS, "background_task_priority_88bdbce9", Some("priority")).is_none());
    }

    #[test]
    fn locks_of_gone_runners() {
        let alive: HashSet<String> = ["h:1:abcd".to_owned()].into();
        assert!(!is_gone("h:1:abcd", &alive), "an alive registered runner");
        assert!(is_gone("h:2:abcd", &alive), "an unregistered identity");
        assert!(
            !is_gone(&std::process::id().to_string(), &alive),
            "a Django bare PID that runs"
        );
        assert!(
            is_gone("2147483646", &alive),
            "a bare PID that does not run"
        );
        assert!(is_gone("mylock", &alive));
    }
}
