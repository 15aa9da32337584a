//! The policies one execution runs under: the task's definition
//! ([`TaskDefaults`]), overridden field by field by what was set for this
//! enqueue (stored as JSON in `background_task.policy`), the runner's
//! settings where neither says.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::entity::task;
use crate::error::{Error, Result};
use crate::task::{Backoff, KeepHistory, TaskDefaults};

/// Overrides set on one enqueue: what `background_task.policy` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Overrides {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_run_time_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<StoredBackoff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_history: Option<KeepHistory>,
    /// The task waits for others ([`crate::workflow`]): it reads their
    /// outcomes before it runs, and its step row goes when it ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step: bool,
}

/// A [`Backoff`] that can be stored with a row (a custom function cannot).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum StoredBackoff {
    Seed,
    Exponential {
        base_ms: u64,
        max_ms: u64,
        jitter: f64,
    },
    Fixed {
        delay_ms: u64,
    },
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl StoredBackoff {
    /// The storable form of `backoff`; an error for a custom function.
    pub(crate) fn of(backoff: &Backoff) -> Result<Self> {
        Ok(match backoff {
            Backoff::Seed => StoredBackoff::Seed,
            Backoff::Exponential { base, max, jitter } => StoredBackoff::Exponential {
                base_ms: millis(*base),
                max_ms: millis(*max),
                jitter: *jitter,
            },
            Backoff::Fixed(delay) => StoredBackoff::Fixed {
                delay_ms: millis(*delay),
            },
            Backoff::Custom(_) => {
                return Err(Error::invalid(
                    "backoff",
                    "a custom backoff function cannot be stored with a task row; set it where \
                     the task is defined (TaskDefaults::backoff), or use a seed, exponential or \
                     fixed backoff for this enqueue",
                ));
            }
        })
    }

    fn backoff(&self) -> Backoff {
        match self {
            StoredBackoff::Seed => Backoff::Seed,
            StoredBackoff::Exponential {
                base_ms,
                max_ms,
                jitter,
            } => Backoff::Exponential {
                base: Duration::from_millis(*base_ms),
                max: Duration::from_millis(*max_ms),
                jitter: *jitter,
            },
            StoredBackoff::Fixed { delay_ms } => Backoff::Fixed(Duration::from_millis(*delay_ms)),
        }
    }
}

impl Overrides {
    /// The JSON stored in the row; `None` when nothing is overridden.
    pub(crate) fn to_column(&self) -> Option<String> {
        (*self != Overrides::default())
            .then(|| serde_json::to_string(self).expect("overrides serialize"))
    }

    /// The overrides `task` was enqueued with. A column this version cannot
    /// read (written by a newer one, or by hand) is logged and ignored: the
    /// task runs under its definition's policies.
    pub(crate) fn of(task: &task::Model) -> Self {
        let Some(text) = task.policy.as_deref() else {
            return Self::default();
        };
        serde_json::from_str(text).unwrap_or_else(|err| {
            tracing::warn!(
                task.id,
                "ignoring the unreadable policy overrides {text:?} of {task}: {err}"
            );
            Self::default()
        })
    }
}

/// The policies of one execution, where the definition or the enqueue set
/// them (`None`: the runner's setting).
#[derive(Clone, Debug)]
pub(crate) struct Effective {
    pub max_attempts: Option<u32>,
    pub max_run_time: Option<Duration>,
    pub backoff: Option<Backoff>,
    pub keep_history: KeepHistory,
    pub repeat_after_failure: bool,
}

impl Effective {
    /// `task`'s overrides over its definition's `defaults`.
    pub(crate) fn of(task: &task::Model, defaults: Option<&TaskDefaults>) -> Self {
        let overrides = Overrides::of(task);
        Self {
            max_attempts: overrides
                .max_attempts
                .or(defaults.and_then(|d| d.max_attempts)),
            max_run_time: overrides
                .max_run_time_ms
                .map(Duration::from_millis)
                .or(defaults.and_then(|d| d.max_run_time)),
            backoff: overrides
                .backoff
                .as_ref()
                .map(StoredBackoff::backoff)
                .or_else(|| defaults.and_then(|d| d.backoff.clone())),
            keep_history: overrides
                .keep_history
                .or(defaults.map(|d| d.keep_history))
                .unwrap_or_default(),
            repeat_after_failure: defaults.is_some_and(|d| d.repeat_after_failure),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_round_trip_through_the_column() {
        let overrides = Overrides {
            max_attempts: Some(3),
            max_run_time_ms: Some(1_500),
            backoff: Some(StoredBackoff::of(&Backoff::Fixed(Duration::from_secs(2))).unwrap()),
            keep_history: Some(KeepHistory::FailuresOnly),
            step: false,
        };
        let text = overrides.to_column().unwrap();
        assert_eq!(
            text,
            r#"{"max_attempts":3,"max_run_time_ms":1500,"backoff":{"kind":"fixed","delay_ms":2000},"keep_history":"failures_only"}"#
        );
        assert_eq!(serde_json::from_str::<Overrides>(&text).unwrap(), overrides);
        assert_eq!(Overrides::default().to_column(), None);
    }

    #[test]
    fn a_custom_backoff_cannot_be_stored() {
        let custom = Backoff::Custom(std::sync::Arc::new(|_| Duration::ZERO));
        assert!(StoredBackoff::of(&custom).is_err());
    }
}
