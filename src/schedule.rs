//! When a task runs: the seed's `TaskSchedule` (run_at, priority, action),
//! its repeat periods, and the merge of call-time over definition-time values.

use chrono::{DateTime, TimeDelta, Utc};

/// Repeat periods of the seed (`Task.HOURLY`, ...), in seconds. Any other
/// non-negative number of seconds is accepted too.
pub mod repeat {
    /// Do not repeat (the default).
    pub const NEVER: i64 = 0;
    /// Every hour.
    pub const HOURLY: i64 = 3_600;
    /// Every day.
    pub const DAILY: i64 = 86_400;
    /// Every week.
    pub const WEEKLY: i64 = 604_800;
    /// Every two weeks.
    pub const EVERY_2_WEEKS: i64 = 1_209_600;
    /// Every four weeks.
    pub const EVERY_4_WEEKS: i64 = 2_419_200;
}

/// What to do when unlocked tasks with the same name and params already wait
/// (the seed's `TaskSchedule.SCHEDULE / RESCHEDULE_EXISTING / CHECK_EXISTING`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// Always insert a new task (the default).
    #[default]
    Schedule,
    /// Move the existing tasks to the new run_at and priority instead of
    /// inserting; insert only when there are none.
    RescheduleExisting,
    /// Insert only when no such task exists.
    CheckExisting,
}

/// When to run: a delay from now or a point in time.
///
/// As in the seed, a delay of zero seconds counts as "not given": when the
/// task definition has a default schedule, `0` falls back to it (see
/// [`Schedule::merge`]); with no default it means now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAt {
    /// This long after the moment of enqueueing (may be negative).
    After(TimeDelta),
    /// At this time, exactly.
    At(DateTime<Utc>),
}

impl RunAt {
    fn is_unset(&self) -> bool {
        matches!(self, RunAt::After(delay) if delay.is_zero())
    }

    /// The time this resolves to, given the current time; a delay past
    /// the range of times saturates at its end (and is refused at enqueue:
    /// see [`crate::Queue::enqueue`]).
    pub fn resolve(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            RunAt::After(delay) => {
                now.checked_add_signed(delay)
                    .unwrap_or(if delay < TimeDelta::zero() {
                        DateTime::<Utc>::MIN_UTC
                    } else {
                        DateTime::<Utc>::MAX_UTC
                    })
            }
            RunAt::At(time) => time,
        }
    }
}

/// Seconds from now.
impl From<i64> for RunAt {
    fn from(seconds: i64) -> Self {
        // Past TimeDelta's range (about 292 million years): saturated, and
        // refused at enqueue like any time past the year 9999.
        RunAt::After(TimeDelta::try_seconds(seconds).unwrap_or(if seconds < 0 {
            TimeDelta::MIN
        } else {
            TimeDelta::MAX
        }))
    }
}

/// Seconds from now.
impl From<i32> for RunAt {
    fn from(seconds: i32) -> Self {
        RunAt::After(TimeDelta::seconds(seconds.into()))
    }
}

impl From<TimeDelta> for RunAt {
    fn from(delay: TimeDelta) -> Self {
        RunAt::After(delay)
    }
}

impl From<std::time::Duration> for RunAt {
    fn from(delay: std::time::Duration) -> Self {
        RunAt::After(TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX))
    }
}

impl From<DateTime<Utc>> for RunAt {
    fn from(time: DateTime<Utc>) -> Self {
        RunAt::At(time)
    }
}

/// The seed's `TaskSchedule`: optional run_at, priority and action. Unset
/// fields fall back to the task definition's schedule, then to the defaults
/// (now, priority 0, [`Action::Schedule`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// When to run.
    pub run_at: Option<RunAt>,
    /// Priority.
    pub priority: Option<i32>,
    /// What to do with existing identical tasks.
    pub action: Option<Action>,
}

impl Schedule {
    /// An empty schedule: every field falls back.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets when to run (seconds, a duration, or a time).
    pub fn run_at(mut self, run_at: impl Into<RunAt>) -> Self {
        self.run_at = Some(run_at.into());
        self
    }

    /// Sets the priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets the action.
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    /// Field by field, `self` wins where it is set, else `fallback`'s value
    /// (the seed's `TaskSchedule.merge`). A zero delay counts as unset.
    pub fn merge(self, fallback: Schedule) -> Schedule {
        Schedule {
            run_at: self.run_at.filter(|r| !r.is_unset()).or(fallback.run_at),
            priority: self.priority.or(fallback.priority),
            action: self.action.or(fallback.action),
        }
    }

    /// The time to run at, evaluated now: unset (or zero) means `now`.
    pub fn resolve_run_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.run_at.map_or(now, |r| r.resolve(now))
    }

    /// The priority, 0 when unset.
    pub fn resolved_priority(&self) -> i32 {
        self.priority.unwrap_or(0)
    }

    /// The action, [`Action::Schedule`] when unset.
    pub fn resolved_action(&self) -> Action {
        self.action.unwrap_or_default()
    }
}

impl<T: Into<RunAt>> From<T> for Schedule {
    fn from(run_at: T) -> Self {
        Schedule::new().run_at(run_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    // TestTaskSchedule.test_priority
    #[test]
    fn priority_defaults_to_zero_and_round_trips() {
        assert_eq!(Schedule::new().resolved_priority(), 0);
        for p in [0, 1, 2] {
            assert_eq!(Schedule::new().priority(p).resolved_priority(), p);
        }
    }

    // TestTaskSchedule.test_run_at
    #[test]
    fn run_at_forms() {
        let now = now();
        assert_eq!(Schedule::new().resolve_run_at(now), now);
        assert_eq!(Schedule::from(0).resolve_run_at(now), now);
        assert_eq!(Schedule::from(TimeDelta::zero()).resolve_run_at(now), now);
        let at = now + TimeDelta::days(3);
        assert_eq!(Schedule::from(at).resolve_run_at(now), at);
        assert_eq!(
            Schedule::from(90).resolve_run_at(now),
            now + TimeDelta::seconds(90)
        );
        assert_eq!(
            Schedule::from(std::time::Duration::from_secs(35)).resolve_run_at(now),
            now + TimeDelta::seconds(35)
        );
    }

    // TestTaskSchedule.test_create
    #[test]
    fn defaults_of_a_schedule_with_only_run_at() {
        let s = Schedule::from(10);
        assert_eq!(s.resolved_priority(), 0);
        assert_eq!(s.resolved_action(), Action::Schedule);
        let full = Schedule::from(now())
            .priority(2)
            .action(Action::RescheduleExisting);
        assert_eq!(full.resolved_priority(), 2);
        assert_eq!(full.resolved_action(), Action::RescheduleExisting);
    }

    // TestTaskSchedule.test_merge
    #[test]
    fn merge_is_field_by_field() {
        let now = now();
        let default = Schedule::from(10)
            .priority(2)
            .action(Action::RescheduleExisting);

        let merged = Schedule::from(20).merge(default);
        assert_eq!(merged.resolve_run_at(now), now + TimeDelta::seconds(20));
        assert_eq!(merged.resolved_priority(), 2);
        assert_eq!(merged.resolved_action(), Action::RescheduleExisting);

        let merged = Schedule::new().priority(0).merge(default);
        assert_eq!(merged.resolved_priority(), 0);
        assert_eq!(merged.resolve_run_at(now), now + TimeDelta::seconds(10));
        assert_eq!(merged.resolved_action(), Action::RescheduleExisting);

        let merged = Schedule::new().action(Action::CheckExisting).merge(default);
        assert_eq!(merged.resolved_action(), Action::CheckExisting);
        assert_eq!(merged.resolved_priority(), 2);
    }

    // Seed quirk kept (checklist 17): a call-time zero delay falls back to
    // the definition's run_at instead of meaning "now".
    #[test]
    fn zero_delay_falls_back_to_the_default_run_at() {
        let now = now();
        let default = Schedule::from(60);
        for zero in [Schedule::from(0), Schedule::from(TimeDelta::zero())] {
            assert_eq!(
                zero.merge(default).resolve_run_at(now),
                now + TimeDelta::seconds(60)
            );
        }
        assert_eq!(
            Schedule::from(0).merge(Schedule::new()).resolve_run_at(now),
            now
        );
    }

    #[test]
    fn repeat_constants_match_the_seed() {
        assert_eq!(repeat::NEVER, 0);
        assert_eq!(repeat::HOURLY, 3600);
        assert_eq!(repeat::DAILY, 86400);
        assert_eq!(repeat::WEEKLY, 604800);
        assert_eq!(repeat::EVERY_2_WEEKS, 1209600);
        assert_eq!(repeat::EVERY_4_WEEKS, 2419200);
    }
}
