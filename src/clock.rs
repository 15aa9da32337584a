//! The one clock every timestamp comes from.
//!
//! All times are UTC and truncated to whole microseconds, the precision of
//! every supported database, so a time written and read back compares equal.
//! Tests replace the clock to drive schedules without sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};

/// Source of "now" for the queue and the runner.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The system clock (the default).
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that stands still at `start` until moved with [`Clock::advance`]
    /// or [`Clock::set`]. For tests.
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self {
            manual: Some(Arc::new(AtomicI64::new(start.timestamp_micros()))),
        }
    }

    /// The current time, UTC, in whole microseconds.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.manual {
            Some(micros) => {
                DateTime::from_timestamp_micros(micros.load(Ordering::SeqCst)).unwrap_or_default()
            }
            None => Utc::now().trunc_subsecs(6),
        }
    }

    /// Moves a manual clock forward (a system clock is not affected).
    pub fn advance(&self, by: TimeDelta) {
        if let Some(micros) = &self.manual {
            micros.fetch_add(by.num_microseconds().unwrap_or(i64::MAX), Ordering::SeqCst);
        }
    }

    /// Sets a manual clock (a system clock is not affected).
    pub fn set(&self, to: DateTime<Utc>) {
        if let Some(micros) = &self.manual {
            micros.store(to.timestamp_micros(), Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            Some(_) => write!(f, "Clock::manual({})", self.now()),
            None => f.write_str("Clock::system()"),
        }
    }
}

/// Truncates a time to whole microseconds, the precision the databases keep.
pub(crate) fn to_db_precision(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap();
        let clock = Clock::manual(start);
        assert_eq!(clock.now(), start);
        clock.advance(TimeDelta::seconds(90));
        assert_eq!(clock.now(), start + TimeDelta::seconds(90));
    }

    #[test]
    fn system_clock_has_microsecond_precision() {
        let now = Clock::system().now();
        assert_eq!(now.timestamp_subsec_nanos() % 1_000, 0);
    }
}
