//! `bgtasks enqueue`: one task from flags, or many from a file of JSON
//! lines (`--from FILE`, `-` for stdin) written through the bulk path.
//!
//! A flag and a line's key are read by the same functions, so
//! `"schedule": "15m"` on a line means what `--schedule 15m` means. A file
//! streams: it is read a line at a time and written in batches of
//! [`insert_chunk`] rows, one INSERT each, so its size does not matter.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use clap::Args;
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend};
use serde::Deserialize as _;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::output::{self, Progress};
use super::{Context, Failure};
use crate::config::{Config, validate_queue_name};
use crate::entity::task;
use crate::error::Error;
use crate::inspect;
use crate::params::{self, Json, ParamsError};
use crate::queue::{Creator, Enqueued, MAX_VERBOSE_NAME_LEN, Queue, Resolved, TaskSpec};
use crate::registry::Registry;
use crate::schedule::Action;
use crate::store::{self, enqueue as bulk, enqueue::insert_chunk};
use crate::task::KeepHistory;

/// Bad lines of a file that are listed one by one; the rest are counted.
const MAX_REPORTED_LINES: usize = 100;

/// A line as the errors show it.
const EXAMPLE: &str =
    r#"{"name": "bgtasks.echo", "args": ["hi"], "kwargs": {"to": "ada"}, "priority": 5}"#;

/// The keys a line may have.
const KEYS: &str = "name, args, kwargs, schedule, priority, queue, verbose_name, repeat, \
                    repeat_until, remove_existing, unique, allow_unknown, max_attempts, \
                    max_run_time, keep_history, creator, key";

#[derive(Debug, Args)]
pub(super) struct EnqueueArgs {
    /// Registered task name (with --from, each line names its task).
    #[arg(required_unless_present = "from")]
    pub(super) name: Option<String>,
    /// Positional arguments, as a JSON array (stored as Python's json.dumps
    /// writes it; integers of any size are kept exactly).
    #[arg(long, default_value = "[]", conflicts_with = "from")]
    args: String,
    /// Keyword arguments, as a JSON object.
    #[arg(long, default_value = "{}", conflicts_with = "from")]
    kwargs: String,
    /// Enqueue many tasks from FILE ('-' reads stdin), one JSON object per
    /// line, with one INSERT per 1,000 rows.
    ///
    /// A line names its task and may give its arguments and any enqueue
    /// option, under the flag's name with underscores:
    /// {"name": "bgtasks.echo", "args": ["hi"], "kwargs": {"to": "ada"},
    /// "priority": 5, "queue": "mail", "schedule": "15m", "verbose_name":
    /// "Say hi", "repeat": 3600, "repeat_until": "2026-12-31 00:00",
    /// "remove_existing": true, "unique": true, "allow_unknown": true,
    /// "max_attempts": 3, "max_run_time": "90s", "keep_history": "never",
    /// "creator": "12:34"}. Schedules and durations take seconds (a number)
    /// or the flag's text; relative times count from the start of the
    /// command. Option flags given with --from apply to every line that
    /// does not set its own. Blank lines are skipped.
    ///
    /// Bad lines (malformed JSON, an unknown task name or key, a bad value)
    /// are listed by line number on stderr (the first 100; all are
    /// counted) and the command exits with 2. Without --atomic the good
    /// lines are written all the same, in transactions of 1,000 rows; with
    /// --atomic nothing is.
    #[arg(long, value_name = "FILE", conflicts_with = "name")]
    from: Option<PathBuf>,
    /// With --from: one transaction for the whole file, committed only when
    /// every line is good; a bad line means nothing is written.
    #[arg(long)]
    atomic: bool,
    #[command(flatten)]
    options: OptionArgs,
}

/// The enqueue options as flags: for one task or, with `--from`, for every
/// line that does not set its own.
#[derive(Debug, Args)]
struct OptionArgs {
    /// When to run: seconds from now (60; -60 is a minute ago), a delay
    /// (15m, 2h, -5m), or a UTC time (2026-11-28 09:00, RFC 3339). Default:
    /// the task's default, else now.
    #[arg(long, allow_hyphen_values = true)]
    schedule: Option<String>,
    /// Priority (higher runs first, by default).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// Named queue.
    #[arg(long)]
    queue: Option<String>,
    /// Human label.
    #[arg(long)]
    verbose_name: Option<String>,
    /// Run again every this many seconds (or 15m, 1h, 1d) after each success.
    #[arg(long)]
    repeat: Option<String>,
    /// Stop repeating after this UTC time.
    #[arg(long)]
    repeat_until: Option<String>,
    /// Delete waiting tasks with the same name and params first (the
    /// seed's remove_existing_tasks).
    #[arg(long)]
    remove_existing: bool,
    /// Enqueue a name this binary has no handler for (another runner, say a
    /// Django process_tasks, will run it).
    #[arg(long)]
    allow_unknown: bool,
    /// A unique task: nothing is inserted while a live row with the same
    /// name and params exists (its id is printed instead).
    #[arg(long)]
    unique: bool,
    /// Attempts before this task fails for good, for this enqueue only
    /// (overrides the task's definition and MAX_ATTEMPTS).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: Option<u32>,
    /// How long one execution may run (90s, 15m, or seconds), for this
    /// enqueue only (overrides the definition and MAX_RUN_TIME).
    #[arg(long)]
    max_run_time: Option<String>,
    /// Which history rows this task keeps: always, failures-only or never,
    /// for this enqueue only.
    #[arg(long)]
    keep_history: Option<String>,
    /// Who created the task: CONTENT_TYPE_ID:OBJECT_ID (the seed's creator;
    /// in Django, a content type id and an object id).
    #[arg(long)]
    creator: Option<String>,
    /// The task's key (a tenant, an API account; 1 to 190 characters),
    /// instead of what its task's key function computes: a queue with a
    /// key policy (`bgtasks limit key`) shares its claims out by key.
    #[arg(long)]
    key: Option<String>,
}

/// Enqueue options, read and checked: what the flags or a line set.
#[derive(Clone, Debug, Default)]
struct Options {
    schedule: Option<DateTime<Utc>>,
    priority: Option<i32>,
    queue: Option<String>,
    verbose_name: Option<String>,
    repeat: Option<i64>,
    repeat_until: Option<DateTime<Utc>>,
    remove_existing: Option<bool>,
    unique: Option<bool>,
    allow_unknown: Option<bool>,
    max_attempts: Option<u32>,
    max_run_time: Option<std::time::Duration>,
    keep_history: Option<KeepHistory>,
    creator: Option<Creator>,
    key: Option<String>,
}

impl OptionArgs {
    /// The flags' options; relative times count from `now`.
    fn read(&self, now: DateTime<Utc>) -> Result<Options, Failure> {
        let read = || -> Result<Options, String> {
            Ok(Options {
                schedule: map(&self.schedule, |t| schedule("--schedule", t, now))?,
                priority: self.priority,
                queue: map(&self.queue, |name| {
                    validate_queue_name(name)
                        .map(|()| name.to_owned())
                        .map_err(|err| err.to_string())
                })?,
                verbose_name: map(&self.verbose_name, |label| {
                    let len = label.chars().count();
                    if len > MAX_VERBOSE_NAME_LEN {
                        return Err(format!(
                            "--verbose-name: {len} characters; at most {MAX_VERBOSE_NAME_LEN} \
                             are allowed"
                        ));
                    }
                    Ok(label.to_owned())
                })?,
                repeat: map(&self.repeat, |t| repeat("--repeat", t))?,
                repeat_until: map(&self.repeat_until, |t| time("--repeat-until", t, now))?,
                remove_existing: self.remove_existing.then_some(true),
                unique: self.unique.then_some(true),
                allow_unknown: self.allow_unknown.then_some(true),
                max_attempts: self.max_attempts,
                max_run_time: map(&self.max_run_time, |t| max_run_time("--max-run-time", t))?,
                keep_history: map(&self.keep_history, |t| keep_history("--keep-history", t))?,
                creator: map(&self.creator, |t| creator("--creator", t))?,
                key: map(&self.key, |key| {
                    crate::admin::validate_key(key)
                        .map(|()| key.to_owned())
                        .map_err(|err| format!("--key: {err}"))
                })?,
            })
        };
        read().map_err(Failure::BadInput)
    }
}

fn map<T>(
    text: &Option<String>,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, String> {
    text.as_deref().map(parse).transpose()
}

impl Options {
    /// These options, with `defaults` for the ones they do not set.
    fn or(self, defaults: &Options) -> Options {
        Options {
            schedule: self.schedule.or(defaults.schedule),
            priority: self.priority.or(defaults.priority),
            queue: self.queue.or_else(|| defaults.queue.clone()),
            verbose_name: self.verbose_name.or_else(|| defaults.verbose_name.clone()),
            repeat: self.repeat.or(defaults.repeat),
            repeat_until: self.repeat_until.or(defaults.repeat_until),
            remove_existing: self.remove_existing.or(defaults.remove_existing),
            unique: self.unique.or(defaults.unique),
            allow_unknown: self.allow_unknown.or(defaults.allow_unknown),
            max_attempts: self.max_attempts.or(defaults.max_attempts),
            max_run_time: self.max_run_time.or(defaults.max_run_time),
            keep_history: self.keep_history.or(defaults.keep_history),
            creator: self.creator.or(defaults.creator),
            key: self.key.or_else(|| defaults.key.clone()),
        }
    }

    /// `spec` with these options set (the others keep the task's defaults).
    fn apply(self, mut spec: TaskSpec) -> TaskSpec {
        if let Some(at) = self.schedule {
            spec = spec.schedule(at);
        }
        if let Some(priority) = self.priority {
            spec = spec.priority(priority);
        }
        if let Some(queue) = self.queue {
            spec = spec.queue(queue);
        }
        if let Some(label) = self.verbose_name {
            spec = spec.verbose_name(label);
        }
        if let Some(seconds) = self.repeat {
            spec = spec.repeat(seconds);
        }
        if let Some(until) = self.repeat_until {
            spec = spec.repeat_until(until);
        }
        if let Some(remove) = self.remove_existing {
            spec = spec.remove_existing_tasks(remove);
        }
        if let Some(unique) = self.unique {
            spec = spec.unique(unique);
        }
        if let Some(attempts) = self.max_attempts {
            spec = spec.max_attempts(attempts);
        }
        if let Some(limit) = self.max_run_time {
            spec = spec.max_run_time(limit);
        }
        if let Some(keep) = self.keep_history {
            spec = spec.keep_history(keep);
        }
        if let Some(creator) = self.creator {
            spec = spec.creator(creator);
        }
        if let Some(key) = self.key {
            spec = spec.key(key);
        }
        spec
    }
}

// ---- values, as flags and lines give them ------------------------------
//
// Each takes the name to blame (`--max-run-time` for a flag, `max_run_time`
// for a line's key) and says what is wrong with the value and what is
// accepted.

/// `--args`/`--kwargs` read as Python's `json.loads` reads them: the stored
/// params are then what `json.dumps(..., sort_keys=True)` writes for them,
/// integers of any width included (see `params`). What Python would read but
/// Rust cannot store exactly (a lone surrogate, NaN) is refused, naming it.
pub(super) fn json_arg(option: &str, text: &str, want_object: bool) -> Result<Json, Failure> {
    let value = params::parse_json(text).map_err(|err| match err {
        ParamsError::Malformed { reason } => Failure::BadInput(format!(
            "{option} is not valid JSON ({reason}): pass {}",
            shape_example(want_object)
        )),
        err => Failure::BadInput(format!("{option}: {err}")),
    })?;
    shaped(option, value, want_object).map_err(Failure::BadInput)
}

fn shape_example(want_object: bool) -> &'static str {
    if want_object {
        "an object such as '{\"to\": \"ada@example.com\"}'"
    } else {
        "an array such as '[1, \"two\"]'"
    }
}

/// `value` when it is an object (`want_object`) or an array.
fn shaped(option: &str, value: Json, want_object: bool) -> Result<Json, String> {
    match value {
        Json::Dict(_) if want_object => Ok(value),
        Json::List(_) if !want_object => Ok(value),
        other => Err(format!(
            "{option} must be a JSON {}, not {}: pass {}",
            if want_object { "object" } else { "array" },
            other.kind(),
            shape_example(want_object)
        )),
    }
}

/// A number of seconds, or a duration such as `15m`; both may be negative,
/// and at most [`crate::MAX_DURATION`] (100 years) either way.
fn delay(option: &str, text: &str) -> Result<TimeDelta, String> {
    let text = text.trim();
    let max = crate::MAX_DURATION.as_secs();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .filter(|seconds| seconds.unsigned_abs() <= max)
            .and_then(TimeDelta::try_seconds)
            .ok_or_else(|| {
                format!(
                    "{option}: {text} s is longer than {max} s (100 years), the longest a \
                     duration may be"
                )
            });
    }
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    inspect::parse_age(magnitude)
        .map(|delay| if negative { -delay } else { delay })
        .map_err(|err| match err {
            Error::InvalidOption { reason, .. } => format!("{option}: {reason}"),
            err => format!("{option}: {err}"),
        })
}

/// Whether `text` is written as a delay (whole seconds, maybe negative, or
/// a duration such as `15m` or `-5m`) rather than a time.
fn is_delay(text: &str) -> bool {
    let text = text.trim();
    let magnitude = text.strip_prefix('-').unwrap_or(text);
    let digits = magnitude
        .strip_suffix(['s', 'm', 'h', 'd'])
        .unwrap_or(magnitude);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// When to run: seconds or a delay from `now` (negative: in the past), or
/// a UTC time; in the years 1 to 9999 either way.
fn schedule(option: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if is_delay(text) {
        let at = now
            .checked_add_signed(delay(option, text)?)
            .ok_or_else(|| format!("{option}: {text} is too far from now"))?;
        return inspect::storable(at, text).map_err(|err| match err {
            Error::InvalidOption { reason, .. } => format!("{option}: {reason}"),
            err => format!("{option}: {err}"),
        });
    }
    inspect::parse_time(text, now).map_err(|err| match err {
        // A time, but outside what a database stores: say that.
        Error::InvalidOption { reason, .. } if reason.contains("years 1 to 9999") => {
            format!("{option}: {reason}")
        }
        _ => format!(
            "{option}: {:?} is not a time; give seconds from now (60, or -60 for a minute \
             ago), a delay (90s, 15m, 2h, 1d, -5m) or a UTC time (2026-11-27 10:00, \
             2026-11-27T10:00:00Z)",
            text.trim()
        ),
    })
}

/// A UTC time (or an age: `2h` is two hours ago).
fn time(option: &str, text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    inspect::parse_time(text, now).map_err(|err| match err {
        Error::InvalidOption { reason, .. } => format!("{option}: {reason}"),
        err => format!("{option}: {err}"),
    })
}

/// A repeat period in seconds (the enqueue refuses a negative one).
fn repeat(option: &str, text: &str) -> Result<i64, String> {
    delay(option, text).map(|period| period.num_seconds())
}

fn max_run_time(option: &str, text: &str) -> Result<std::time::Duration, String> {
    delay(option, text)?
        .to_std()
        .ok()
        .filter(|limit| !limit.is_zero())
        .ok_or_else(|| format!("{option} must be more than 0 (90s, 15m, or seconds)"))
}

fn keep_history(option: &str, text: &str) -> Result<KeepHistory, String> {
    match text {
        "always" => Ok(KeepHistory::Always),
        "failures-only" | "failures_only" => Ok(KeepHistory::FailuresOnly),
        "never" => Ok(KeepHistory::Never),
        other => Err(format!(
            "{option}: {other:?} is not always, failures-only or never"
        )),
    }
}

/// `CONTENT_TYPE_ID:OBJECT_ID`.
fn creator(option: &str, text: &str) -> Result<Creator, String> {
    text.split_once(':')
        .and_then(|(kind, id)| {
            Some(Creator::new(
                kind.trim().parse().ok()?,
                id.trim().parse().ok()?,
            ))
        })
        .ok_or_else(|| {
            format!(
                "{option}: {text:?} is not CONTENT_TYPE_ID:OBJECT_ID (such as 12:34; the object \
                 id is 0 to 4294967295)"
            )
        })
}

/// Refuses a name this binary cannot run unless the caller allows it.
fn check_known(registry: &Registry, name: &str, allow_unknown: bool) -> Result<(), String> {
    if allow_unknown || registry.contains(name) {
        return Ok(());
    }
    Err(format!(
        "no task named {name:?} is registered in this binary (it knows: {}); check the name, \
         or pass --allow-unknown to enqueue it for another runner",
        registry.names().join(", ")
    ))
}

fn now() -> DateTime<Utc> {
    Config::default().clock().now()
}

// ---- one task ----------------------------------------------------------

pub(super) async fn run(ctx: &Context, args: EnqueueArgs) -> Result<(), Failure> {
    if let Some(source) = &args.from {
        return from_lines(ctx, &args, source).await;
    }
    if args.atomic {
        return Err(Failure::BadInput(
            "--atomic applies to --from FILE; one task is always written all or nothing".into(),
        ));
    }
    let Some(name) = args.name.as_deref() else {
        return Err(Failure::BadInput(
            "give the task's name, or --from FILE to enqueue many".into(),
        ));
    };
    let positional = json_arg("--args", &args.args, false)?;
    let keywords = json_arg("--kwargs", &args.kwargs, true)?;
    check_known(&ctx.registry, name, args.options.allow_unknown).map_err(Failure::BadInput)?;
    let now = now();
    // Every option is read before anything is written.
    let options = args.options.read(now)?;
    let conn = ctx.migrated_db().await?;
    let queue = Queue::with_parts(conn, ctx.registry.clone(), Config::default());
    let spec = options.apply(TaskSpec::call(
        name,
        &positional,
        &keywords,
        queue.registry(),
    ));
    match queue.enqueue_spec(queue.db(), spec).await? {
        Enqueued::Created(task) => {
            if ctx.json {
                output::json(&json!({"result": "created", "task": task}));
            } else {
                println!(
                    "enqueued task {} {} to run at {} UTC",
                    task.id,
                    task.task_name,
                    output::time(task.run_at)
                );
            }
        }
        Enqueued::Rescheduled { count } => {
            if ctx.json {
                output::json(&json!({"result": "rescheduled", "count": count}));
            } else {
                println!(
                    "moved {count} waiting task(s) with the same name and params (RESCHEDULE_EXISTING)"
                );
            }
        }
        Enqueued::AlreadyExists { id } => {
            if ctx.json {
                output::json(&json!({"result": "already_exists", "id": id}));
            } else {
                println!(
                    "task {id} with the same name and params is already waiting (CHECK_EXISTING)"
                );
            }
        }
    }
    Ok(())
}

// ---- many tasks, from JSON lines ----------------------------------------

/// One line, read.
struct Line {
    name: String,
    args: Json,
    kwargs: Json,
    options: Options,
}

/// Reads one line: a JSON object (parsed as Python's `json.loads` parses
/// it, so its args are stored exactly as `--args` stores them) whose keys
/// are the task's name, its arguments and the enqueue options.
fn read_line(text: &str, now: DateTime<Utc>) -> Result<Line, String> {
    let value = params::parse_json(text).map_err(|err| match err {
        ParamsError::Malformed { reason } => {
            format!("not valid JSON ({reason}); a line is one JSON object such as {EXAMPLE}")
        }
        err => err.to_string(),
    })?;
    let Json::Dict(entries) = value else {
        return Err(format!(
            "a line is one JSON object such as {EXAMPLE}, not {}",
            value.kind()
        ));
    };
    let mut name = None;
    let mut args = None;
    let mut kwargs = None;
    let mut options = Options::default();
    for (key, value) in entries {
        let key = key.as_str();
        match key {
            "name" => name = typed::<String>(key, &value)?,
            "args" | "kwargs" if value == Json::Null => {}
            "args" => args = Some(shaped(key, value, false)?),
            "kwargs" => kwargs = Some(shaped(key, value, true)?),
            "schedule" => {
                options.schedule = seconds_or_text(key, &value)?
                    .map(|t| schedule(key, &t, now))
                    .transpose()?;
            }
            "priority" => options.priority = typed(key, &value)?,
            "queue" => options.queue = typed(key, &value)?,
            "verbose_name" => options.verbose_name = typed(key, &value)?,
            "repeat" => {
                options.repeat = seconds_or_text(key, &value)?
                    .map(|t| repeat(key, &t))
                    .transpose()?;
            }
            "repeat_until" => {
                options.repeat_until = typed::<String>(key, &value)?
                    .map(|t| time(key, &t, now))
                    .transpose()?;
            }
            "remove_existing" => options.remove_existing = typed(key, &value)?,
            "unique" => options.unique = typed(key, &value)?,
            "allow_unknown" => options.allow_unknown = typed(key, &value)?,
            "max_attempts" => {
                options.max_attempts = typed::<u32>(key, &value)?;
                if options.max_attempts == Some(0) {
                    return Err(format!("{key} must be at least 1"));
                }
            }
            "max_run_time" => {
                options.max_run_time = seconds_or_text(key, &value)?
                    .map(|t| max_run_time(key, &t))
                    .transpose()?;
            }
            "keep_history" => {
                options.keep_history = typed::<String>(key, &value)?
                    .map(|t| keep_history(key, &t))
                    .transpose()?;
            }
            "creator" => options.creator = creator_value(key, &value)?,
            "key" => options.key = typed(key, &value)?,
            other => return Err(format!("unknown key {other:?}; a line takes {KEYS}")),
        }
    }
    let name =
        name.ok_or_else(|| format!("no \"name\": a line names its task, as in {EXAMPLE}"))?;
    Ok(Line {
        name,
        args: args.unwrap_or(Json::List(Vec::new())),
        kwargs: kwargs.unwrap_or(Json::Dict(Vec::new())),
        options,
    })
}

/// A value of type `T`, or `None` for `null`.
fn typed<T: DeserializeOwned>(key: &str, value: &Json) -> Result<Option<T>, String> {
    Option::<T>::deserialize(value).map_err(|err| format!("{key}: {err}"))
}

/// A duration or schedule: a whole number of seconds, or the flag's text.
fn seconds_or_text(key: &str, value: &Json) -> Result<Option<String>, String> {
    match value {
        Json::Null => Ok(None),
        Json::Int(digits) => Ok(Some(digits.clone())),
        Json::Str(text) => Ok(Some(text.clone())),
        other => Err(format!(
            "{key}: {} is not a whole number of seconds or a string such as \"15m\"",
            other.kind()
        )),
    }
}

/// `"12:34"` or `{"content_type_id": 12, "object_id": 34}`.
fn creator_value(key: &str, value: &Json) -> Result<Option<Creator>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ids {
        content_type_id: i32,
        object_id: u32,
    }
    match value {
        Json::Null => Ok(None),
        Json::Str(text) => creator(key, text).map(Some),
        _ => Ids::deserialize(value)
            .map(|ids| Some(Creator::new(ids.content_type_id, ids.object_id)))
            .map_err(|err| {
                format!("{key}: {err} (give \"12:34\" or {{\"content_type_id\": 12, \"object_id\": 34}})")
            }),
    }
}

/// A line as a row, checked the way the enqueue checks it, with `defaults`
/// (the flags) for the options it does not set.
fn row_of_line(
    text: &str,
    now: DateTime<Utc>,
    defaults: &Options,
    registry: &Registry,
    backend: DbBackend,
) -> Result<Resolved, String> {
    let line = read_line(text, now)?;
    let options = line.options.or(defaults);
    check_known(registry, &line.name, options.allow_unknown.unwrap_or(false))?;
    let spec = options.apply(TaskSpec::call(
        &line.name,
        &line.args,
        &line.kwargs,
        registry,
    ));
    let resolved = spec.resolve(now).map_err(|err| err.to_string())?;
    bulk::check_fits(backend, &resolved.row).map_err(|err| err.to_string())?;
    Ok(resolved)
}

/// What was written.
#[derive(Clone, Debug, Default)]
struct Tally {
    /// Rows inserted.
    written: u64,
    /// Tasks not inserted because the same one already waits (a unique
    /// task, or CHECK_EXISTING).
    already_waiting: u64,
    /// Waiting rows moved by RESCHEDULE_EXISTING.
    rescheduled: u64,
}

/// Where a file's rows go.
enum Sink {
    /// Without `--atomic`: each batch commits on its own.
    Batches,
    /// `--atomic`: every batch goes through this transaction, committed at
    /// the end of the file.
    Atomic(DatabaseTransaction),
    /// `--atomic` after a bad line: rolled back; the rest is only checked.
    Discard,
}

/// Collects resolved rows into batches and writes each with one DELETE
/// (for `remove_existing`) and one INSERT.
struct Batcher<'q> {
    queue: &'q Queue,
    sink: Sink,
    now: DateTime<Utc>,
    rows: Vec<task::Model>,
    /// Hashes of `rows` that delete waiting copies first.
    remove: Vec<String>,
    /// Hashes of `rows`, to keep the order of a file in which a line
    /// removes the copies of an earlier line of the same batch.
    hashes: HashSet<String>,
    tally: Tally,
    /// Without `--atomic`, the batch being written (rows inserted, rows
    /// sent) while the next one is read: the server executes one INSERT
    /// while this process parses the lines of the next.
    in_flight: Option<tokio::task::JoinHandle<crate::Result<(u64, u64)>>>,
}

/// Lines read between two chances for a batch in flight to make progress
/// (the runtime has one thread, and reading a file does not wait).
const LINES_PER_YIELD: u64 = 256;

impl<'q> Batcher<'q> {
    fn new(queue: &'q Queue, sink: Sink, now: DateTime<Utc>) -> Self {
        Self {
            queue,
            sink,
            now,
            rows: Vec::with_capacity(insert_chunk(queue.db().get_database_backend())),
            remove: Vec::new(),
            hashes: HashSet::new(),
            tally: Tally::default(),
            in_flight: None,
        }
    }

    /// Lets a batch in flight make progress.
    async fn let_in_flight_run(&self) {
        if self.in_flight.is_some() {
            tokio::task::yield_now().await;
        }
    }

    /// Waits for the batch in flight, and counts it.
    async fn settle(&mut self) -> Result<(), Failure> {
        let Some(write) = self.in_flight.take() else {
            return Ok(());
        };
        let (inserted, count) = write.await.map_err(|err| {
            Failure::Failed(crate::Error::invalid(
                "from",
                format!("writing a batch stopped: {err}"),
            ))
        })??;
        self.tally.written += inserted;
        // Unique tasks whose key a live row holds are skipped by the INSERT.
        self.tally.already_waiting += count - inserted;
        Ok(())
    }

    /// Adds one task, writing the batch when it is full.
    async fn push(&mut self, resolved: Resolved) -> Result<(), Failure> {
        if matches!(self.sink, Sink::Discard) {
            return Ok(());
        }
        if resolved.action != Action::Schedule {
            // RESCHEDULE_EXISTING and CHECK_EXISTING (from the task's
            // definition) look at the rows before them: write those first,
            // then this task alone, as `bgtasks enqueue` would.
            self.flush().await?;
            self.settle().await?;
            let outcome = match &self.sink {
                Sink::Atomic(txn) => self.queue.write(txn, resolved, self.now).await?,
                _ => {
                    let txn = store::begin_write(self.queue.db()).await?;
                    let outcome = self.queue.write(&txn, resolved, self.now).await?;
                    txn.commit().await?;
                    outcome
                }
            };
            match outcome {
                Enqueued::Created(_) => self.tally.written += 1,
                Enqueued::Rescheduled { count } => self.tally.rescheduled += count,
                Enqueued::AlreadyExists { .. } => self.tally.already_waiting += 1,
            }
            return Ok(());
        }
        if resolved.remove_existing {
            // Its DELETE runs before the batch's INSERT: an earlier line
            // with the same hash must be written before, to be removed as
            // one enqueue after the other would remove it.
            if self.hashes.contains(&resolved.row.task_hash) {
                self.flush().await?;
            }
            self.remove.push(resolved.row.task_hash.clone());
        }
        self.hashes.insert(resolved.row.task_hash.clone());
        self.rows.push(resolved.row);
        if self.rows.len() >= insert_chunk(self.queue.db().get_database_backend()) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes the batch.
    async fn flush(&mut self) -> Result<(), Failure> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        let remove = std::mem::take(&mut self.remove);
        self.hashes.clear();
        let count = rows.len() as u64;
        let inserted = match &self.sink {
            Sink::Discard => return Ok(()),
            Sink::Atomic(txn) => write_batch(txn, &remove, rows).await?,
            Sink::Batches => {
                // One batch at a time, in the file's order.
                self.settle().await?;
                let db = self.queue.db().clone();
                self.in_flight = Some(tokio::spawn(async move {
                    // A batch that is one INSERT commits on its own: no
                    // BEGIN and COMMIT round trips. Deletes first, or unique
                    // rows (which MySQL inserts one by one), take a
                    // transaction.
                    let inserted =
                        if remove.is_empty() && rows.iter().all(|row| row.unique_key.is_none()) {
                            write_batch(&db, &remove, rows).await?
                        } else {
                            let txn = store::begin_write(&db).await?;
                            let inserted = write_batch(&txn, &remove, rows).await?;
                            txn.commit().await?;
                            inserted
                        };
                    Ok((inserted, count))
                }));
                return Ok(());
            }
        };
        self.tally.written += inserted;
        // Unique tasks whose key a live row holds are skipped by the INSERT.
        self.tally.already_waiting += count - inserted;
        Ok(())
    }

    /// `--atomic` after a bad line: nothing of the file will be written.
    async fn discard(&mut self) -> Result<(), Failure> {
        if let Sink::Atomic(txn) = std::mem::replace(&mut self.sink, Sink::Discard) {
            txn.rollback().await?;
        }
        self.rows.clear();
        self.remove.clear();
        self.hashes.clear();
        self.tally = Tally::default();
        Ok(())
    }

    /// Writes what is left and commits an `--atomic` file.
    async fn finish(&mut self) -> Result<Tally, Failure> {
        self.flush().await?;
        self.settle().await?;
        if let Sink::Atomic(txn) = std::mem::replace(&mut self.sink, Sink::Discard) {
            txn.commit().await?;
        }
        Ok(self.tally.clone())
    }
}

async fn write_batch<C: ConnectionTrait>(
    conn: &C,
    remove: &[String],
    rows: Vec<task::Model>,
) -> crate::Result<u64> {
    if !remove.is_empty() {
        bulk::delete_waiting_with_hashes(conn, remove).await?;
    }
    bulk::insert_many(conn, rows).await
}

/// The bad lines of a file: the first [`MAX_REPORTED_LINES`] with their
/// error, and how many in all.
#[derive(Default)]
struct BadLines {
    listed: Vec<(u64, String)>,
    count: u64,
}

impl BadLines {
    /// Records (and prints, on stderr) a bad line.
    fn add(&mut self, line: u64, reason: String) {
        self.count += 1;
        if self.listed.len() < MAX_REPORTED_LINES {
            eprintln!("bgtasks: line {line}: {reason}");
            self.listed.push((line, reason));
        }
    }
}

/// The file, or stdin for `-`, and its name for messages.
fn open(source: &Path) -> Result<(String, Box<dyn BufRead>), Failure> {
    if source.as_os_str() == "-" {
        return Ok((
            "stdin".to_owned(),
            Box::new(BufReader::new(std::io::stdin())),
        ));
    }
    let file = std::fs::File::open(source).map_err(|err| {
        Failure::BadInput(format!("--from: cannot read {}: {err}", source.display()))
    })?;
    Ok((
        source.display().to_string(),
        Box::new(BufReader::with_capacity(1 << 16, file)),
    ))
}

/// Before a database error without `--atomic`: the batches written so far
/// stay written, and the person should know how many.
fn note_written(atomic: bool, written: u64) {
    if !atomic && written > 0 {
        eprintln!("bgtasks: {written} task(s) were written (and committed) before this error");
    }
}

async fn from_lines(ctx: &Context, args: &EnqueueArgs, source: &Path) -> Result<(), Failure> {
    let now = now();
    // The flags are read once, before any line: a bad flag is one error,
    // not one per line.
    let defaults = args.options.read(now)?;
    let (label, mut input) = open(source)?;
    let conn = ctx.migrated_db().await?;
    let backend = conn.get_database_backend();
    let queue = Queue::with_parts(conn, ctx.registry.clone(), Config::default());
    let sink = if args.atomic {
        Sink::Atomic(store::begin_write(queue.db()).await?)
    } else {
        Sink::Batches
    };
    let mut batcher = Batcher::new(&queue, sink, now);
    let mut bad = BadLines::default();
    let quiet = ctx.json || !std::io::stderr().is_terminal();
    let mut progress = Progress::new("lines read", None, quiet);
    let mut buffer = Vec::new();
    let mut number = 0_u64;
    loop {
        buffer.clear();
        let read = match input.read_until(b'\n', &mut buffer) {
            Ok(read) => read,
            Err(err) => {
                // What was sent is written (or not) before saying so.
                let settled = batcher.settle().await;
                note_written(args.atomic, batcher.tally.written);
                settled?;
                return Err(Failure::BadInput(format!(
                    "cannot read {label} after line {number}: {err}"
                )));
            }
        };
        if read == 0 {
            break;
        }
        number += 1;
        let checked = match std::str::from_utf8(&buffer) {
            Err(err) => Err(format!("not UTF-8 text ({err})")),
            Ok(text) => {
                let text = text.trim_end_matches(['\n', '\r']);
                let text = if number == 1 {
                    text.trim_start_matches('\u{feff}')
                } else {
                    text
                };
                if text.trim().is_empty() {
                    Ok(None)
                } else {
                    row_of_line(text, now, &defaults, queue.registry(), backend).map(Some)
                }
            }
        };
        match checked {
            Ok(None) => {}
            Ok(Some(resolved)) => {
                if let Err(err) = batcher.push(resolved).await {
                    note_written(args.atomic, batcher.tally.written);
                    return Err(err);
                }
            }
            Err(reason) => {
                bad.add(number, reason);
                if args.atomic && bad.count == 1 {
                    batcher.discard().await?;
                }
            }
        }
        progress.set(number);
        if number.is_multiple_of(LINES_PER_YIELD) {
            batcher.let_in_flight_run().await;
        }
    }
    progress.finish();
    let tally = match batcher.finish().await {
        Ok(tally) => tally,
        Err(err) => {
            note_written(args.atomic, batcher.tally.written);
            return Err(err);
        }
    };
    let result = match (bad.count, args.atomic) {
        (0, _) => "enqueued",
        (_, true) => "nothing_written",
        (_, false) => "bad_lines_skipped",
    };
    if ctx.json {
        let listed: Vec<_> = bad
            .listed
            .iter()
            .map(|(line, error)| json!({"line": line, "error": error}))
            .collect();
        output::json(&json!({
            "result": result,
            "lines": number,
            "written": tally.written,
            "already_waiting": tally.already_waiting,
            "rescheduled": tally.rescheduled,
            "bad_lines": bad.count,
            "bad": listed,
        }));
    }
    if bad.count == 0 {
        if !ctx.json {
            let mut text = format!(
                "enqueued {} task(s) from {label} ({number} lines)",
                tally.written
            );
            if tally.already_waiting > 0 {
                text += &format!(
                    "; {} already waiting (unique or CHECK_EXISTING), not inserted",
                    tally.already_waiting
                );
            }
            if tally.rescheduled > 0 {
                text += &format!(
                    "; moved {} waiting task(s) (RESCHEDULE_EXISTING)",
                    tally.rescheduled
                );
            }
            println!("{text}");
        }
        return Ok(());
    }
    let listed = if bad.count > bad.listed.len() as u64 {
        format!("the first {} are listed above", bad.listed.len())
    } else {
        "listed above".to_owned()
    };
    Err(Failure::BadInput(if args.atomic {
        format!(
            "{} of the {number} lines of {label} are bad ({listed}); nothing was written \
             (--atomic)",
            bad.count
        )
    } else {
        format!(
            "{} of the {number} lines of {label} are bad ({listed}) and were skipped; the \
             other lines were written ({} task(s)). Fix the bad lines and enqueue them again \
             (--atomic writes all or nothing)",
            bad.count, tally.written
        )
    }))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn enqueue_args(args: &[&str]) -> EnqueueArgs {
        let cli = Cli::try_parse_from(args).unwrap_or_else(|err| panic!("{args:?}: {err}"));
        let Command::Enqueue(args) = cli.command else {
            panic!("not enqueue")
        };
        args
    }

    #[test]
    fn delays_are_seconds_or_durations_within_the_cap() {
        assert_eq!(delay("--x", "60").ok(), Some(TimeDelta::seconds(60)));
        assert_eq!(delay("--x", "-5").ok(), Some(TimeDelta::seconds(-5)));
        assert_eq!(delay("--x", "15m").ok(), Some(TimeDelta::minutes(15)));
        for long in ["9223372036854775807", "99999999999999999999", "99999999d"] {
            let message = delay("--x", long).expect_err(long);
            assert!(message.contains("100 years"), "{long}: {message}");
        }
        assert!(is_delay("60") && is_delay("-60") && is_delay("2h") && is_delay("-2h"));
        assert!(!is_delay("2026-11-27") && !is_delay("h"));
    }

    mod properties {
        //! 256 cases each (`PROPTEST_CASES` asks for more).

        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn delays_never_panic(text in prop_oneof![any::<String>(), "-?[0-9]{0,22}[smhdé]?"]) {
                if let Ok(delay) = delay("--x", &text) {
                    let max = TimeDelta::from_std(crate::MAX_DURATION).unwrap();
                    prop_assert!(delay.abs() <= max, "{text:?}: {delay}");
                }
            }

            #[test]
            fn seconds_read_back(seconds in prop_oneof![any::<i64>(), -3_155_760_000i64..=3_155_760_000]) {
                let max = crate::MAX_DURATION.as_secs();
                match delay("--x", &seconds.to_string()) {
                    Ok(delay) => prop_assert_eq!(delay, TimeDelta::seconds(seconds)),
                    Err(_) => prop_assert!(seconds.unsigned_abs() > max),
                }
            }

            #[test]
            fn schedules_never_panic(text in prop_oneof![any::<String>(), "-?[0-9]{0,22}[smhdé]?"]) {
                let now = Utc::now();
                if let Ok(at) = schedule("--schedule", &text, now) {
                    prop_assert!((1..=9999).contains(&chrono::Datelike::year(&at)), "{text:?}: {at}");
                }
            }
        }
    }

    #[test]
    fn negative_schedules_are_values_not_flags() {
        for (args, schedule) in [
            (&["bgtasks", "enqueue", "t", "--schedule", "-60"][..], "-60"),
            (&["bgtasks", "enqueue", "t", "--schedule=-60"][..], "-60"),
            (&["bgtasks", "enqueue", "--schedule", "-5m", "t"][..], "-5m"),
        ] {
            let parsed = enqueue_args(args);
            assert_eq!(parsed.options.schedule.as_deref(), Some(schedule));
            assert_eq!(parsed.name.as_deref(), Some("t"));
        }
        let now = Utc::now();
        assert_eq!(schedule("s", "-60", now), Ok(now - TimeDelta::seconds(60)));
        assert_eq!(schedule("s", "-5m", now), Ok(now - TimeDelta::minutes(5)));
        assert_eq!(schedule("s", "90s", now), Ok(now + TimeDelta::seconds(90)));
        assert!(schedule("s", "--5m", now).is_err());
        assert!(repeat("--repeat", "-5m").is_ok_and(|seconds| seconds == -300));
    }

    #[test]
    fn from_takes_no_name_nor_arguments() {
        let parsed = enqueue_args(&["bgtasks", "enqueue", "--from", "-", "--queue", "q"]);
        assert_eq!(parsed.from.as_deref(), Some(Path::new("-")));
        for bad in [
            &["bgtasks", "enqueue", "t", "--from", "f"][..],
            &["bgtasks", "enqueue", "--from", "f", "--args", "[1]"][..],
            &["bgtasks", "enqueue"][..],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lines_read_like_flags() {
        let now = Utc::now();
        let line = read_line(
            r#"{"name": "t", "args": null, "schedule": 60, "repeat": "1h", "max_run_time": 90,
                "keep_history": "never", "creator": {"content_type_id": 1, "object_id": 2},
                "priority": -1, "unique": false}"#,
            now,
        )
        .unwrap();
        assert_eq!(line.name, "t");
        assert_eq!(line.args, Json::List(Vec::new()));
        assert_eq!(line.kwargs, Json::Dict(Vec::new()));
        let options = line.options;
        assert_eq!(options.schedule, Some(now + TimeDelta::seconds(60)));
        assert_eq!(options.repeat, Some(3_600));
        assert_eq!(
            options.max_run_time,
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(options.keep_history, Some(KeepHistory::Never));
        assert_eq!(options.creator, Some(Creator::new(1, 2)));
        assert_eq!((options.priority, options.unique), (Some(-1), Some(false)));

        for (text, says) in [
            ("{\"args\": [1]}", "no \"name\""),
            ("{\"name\": \"t\", \"colour\": 1}", "unknown key \"colour\""),
            (
                "{\"name\": \"t\", \"kwargs\": [1]}",
                "kwargs must be a JSON object",
            ),
            (
                "{\"name\": \"t\", \"schedule\": 1.5}",
                "whole number of seconds",
            ),
            ("{\"name\": \"t\", \"max_attempts\": 0}", "at least 1"),
            ("{\"name\": \"t\", \"max_run_time\": \"0s\"}", "more than 0"),
            ("{\"name\": \"t\", \"priority\": 3000000000}", "priority"),
            (
                "{\"name\": \"t\", \"creator\": \"12\"}",
                "CONTENT_TYPE_ID:OBJECT_ID",
            ),
            ("{\"name\": \"t\", \"args\": [NaN]}", "NaN"),
            ("\"t\"", "not a string"),
            ("{\"name\": \"t\"", "not valid JSON"),
        ] {
            let err = read_line(text, now)
                .err()
                .unwrap_or_else(|| panic!("{text} passed"));
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn flags_are_the_default_of_every_line() {
        let flags = Options {
            priority: Some(4),
            queue: Some("bulk".into()),
            ..Options::default()
        };
        let line = Options {
            queue: Some("mail".into()),
            ..Options::default()
        };
        let merged = line.or(&flags);
        assert_eq!(
            (merged.priority, merged.queue.as_deref()),
            (Some(4), Some("mail"))
        );
    }
}
