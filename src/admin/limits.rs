//! Limits every runner sharing the database keeps, enforced in the claim:
//! a queue's global concurrency ([`set_queue_limit`]), its rate
//! ([`set_rate_limit`]), and its key policy ([`set_key_limit`]: fair claims
//! by task key, per-key concurrency and per-key rate).

use sea_orm::ConnectionTrait;

use crate::error::Result;

/// Sets the global concurrency limit of `queue`: at most `max_running` of
/// its tasks run at once across every runner sharing the database,
/// enforced in each runner's claim. Runners learn of a new or changed
/// limit at their next heartbeat (a third of the lease: 10 s by default).
pub async fn set_queue_limit<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    max_running: u32,
) -> Result<()> {
    crate::config::validate_queue_name(queue)?;
    let max_running = i32::try_from(max_running).map_err(|_| {
        crate::Error::invalid(
            "max_running",
            format!("{max_running} is more than {} tasks", i32::MAX),
        )
    })?;
    crate::store::limits::set(conn, queue, max_running).await
}

/// Removes the global concurrency limit of `queue`; false when it had none.
pub async fn remove_queue_limit<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    crate::store::limits::remove(conn, queue).await
}

/// Every global concurrency limit.
pub async fn queue_limits<C: ConnectionTrait>(
    conn: &C,
) -> Result<Vec<crate::entity::queue_limit::Model>> {
    crate::store::limits::list(conn).await
}

/// Longest period a rate limit may have: 30 days.
pub const MAX_RATE_PERIOD: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Sets the rate limit of `queue`: at most `max_starts` of its tasks start
/// in any window of `period`, across every runner sharing the database
/// (a retry is a start). Enforced in each runner's claim, which locks the
/// limit's row and counts the starts recorded in the window; runners
/// learn of a new limit at their next heartbeat, as of a concurrency
/// limit, and both can be set on one queue. Refused: a limit of 0 starts
/// (pause the queue instead), a period of 0 or over [`MAX_RATE_PERIOD`],
/// a period under a millisecond.
pub async fn set_rate_limit<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    max_starts: u32,
    period: std::time::Duration,
) -> Result<()> {
    crate::config::validate_queue_name(queue)?;
    let (max_starts, period_ms) = rate_values(max_starts, period)?;
    crate::store::limits::set_rate(conn, queue, max_starts, period_ms).await
}

/// A rate's start count and period in milliseconds, checked.
fn rate_values(max_starts: u32, period: std::time::Duration) -> Result<(i32, i64)> {
    if max_starts == 0 {
        return Err(crate::Error::invalid(
            "max_starts",
            "a rate limit of 0 starts would stop the queue for good; give at least 1 (to stop a \
             queue for a while, pause it)",
        ));
    }
    let max_starts = i32::try_from(max_starts).map_err(|_| {
        crate::Error::invalid(
            "max_starts",
            format!("{max_starts} is more than {} starts", i32::MAX),
        )
    })?;
    if period < std::time::Duration::from_millis(1) || period > MAX_RATE_PERIOD {
        return Err(crate::Error::invalid(
            "period",
            format!(
                "{period:?}; a rate limit's period is 1 ms to {} days",
                MAX_RATE_PERIOD.as_secs() / 86_400
            ),
        ));
    }
    let period_ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX);
    Ok((max_starts, period_ms))
}

/// Removes the rate limit of `queue`; false when it had none.
pub async fn remove_rate_limit<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    crate::store::limits::remove_rate(conn, queue).await
}

/// Every rate limit, with the starts of its current window (the one that
/// ends at `now`): its current use.
pub async fn rate_limits<C: ConnectionTrait>(
    conn: &C,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RateLimitUse>> {
    Ok(crate::store::limits::list_rates(conn, now)
        .await?
        .into_iter()
        .map(|(limit, used)| RateLimitUse {
            queue: limit.queue,
            max_starts: limit.max_starts,
            period: std::time::Duration::from_millis(u64::try_from(limit.period_ms).unwrap_or(0)),
            started_in_window: used,
        })
        .collect())
}

/// A rate limit and its current use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RateLimitUse {
    /// The queue.
    pub queue: String,
    /// Most starts in one window.
    pub max_starts: i32,
    /// The window.
    pub period: std::time::Duration,
    /// Starts in the window that ends now.
    pub started_in_window: i64,
}

/// Longest task key, in characters.
pub const MAX_KEY_LEN: usize = 190;

/// Checks a task key: 1 to [`MAX_KEY_LEN`] characters, no control
/// characters.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    let len = key.chars().count();
    if len == 0 || len > MAX_KEY_LEN {
        return Err(crate::Error::invalid(
            "key",
            format!("{len} characters; a task key has 1 to {MAX_KEY_LEN}"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(crate::Error::invalid(
            "key",
            format!("{key:?} holds a control character; a task key is printable text"),
        ));
    }
    Ok(())
}

/// A queue's key policy: how its claims treat task keys ([`crate::Task::key`],
/// [`crate::Enqueue::key`]). Every claim of the queue takes a fair share of
/// each key's due tasks in turn, so one key's backlog never holds the
/// others back; and, when set, keeps each key within its limits, across
/// every runner sharing the database. Tasks of the queue without a key
/// share out as one more key, with no per-key limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyLimit {
    /// At most this many tasks of one key run at once.
    pub max_running: Option<u32>,
    /// At most this many tasks of one key start in any window of this
    /// period (a retry is a start).
    pub rate: Option<(u32, std::time::Duration)>,
}

impl KeyLimit {
    /// Fairness alone: no per-key limit.
    pub fn fair() -> Self {
        Self::default()
    }

    /// At most `max_running` tasks of one key run at once.
    #[must_use]
    pub fn max_running(mut self, max_running: u32) -> Self {
        self.max_running = Some(max_running);
        self
    }

    /// At most `max_starts` tasks of one key start in any window of
    /// `period`.
    #[must_use]
    pub fn rate(mut self, max_starts: u32, period: std::time::Duration) -> Self {
        self.rate = Some((max_starts, period));
        self
    }
}

/// Sets (or replaces) the key policy of `queue` (see [`KeyLimit`]).
/// Runners learn of it at their next heartbeat, as of the other limits,
/// and it combines with them: a claim takes no more than the queue's
/// concurrency and rate limits leave, shared out by key. Refused, with
/// nothing written: 0 running or 0 starts per key (pause the queue
/// instead), a period under 1 ms or over [`MAX_RATE_PERIOD`].
///
/// ```no_run
/// # async fn demo(db: background_tasks::sea_orm::DatabaseConnection) -> background_tasks::Result<()> {
/// use std::time::Duration;
/// use background_tasks::admin::{self, KeyLimit};
///
/// // Each tenant: at most 2 exports at once and 10 a minute.
/// let policy = KeyLimit::fair().max_running(2).rate(10, Duration::from_secs(60));
/// admin::set_key_limit(&db, "exports", policy).await?;
/// # Ok(()) }
/// ```
pub async fn set_key_limit<C: ConnectionTrait>(
    conn: &C,
    queue: &str,
    limit: KeyLimit,
) -> Result<()> {
    crate::config::validate_queue_name(queue)?;
    let max_running = match limit.max_running {
        Some(0) => {
            return Err(crate::Error::invalid(
                "max_running",
                "0 running per key would stop every key for good; give at least 1 (to stop a \
                 queue for a while, pause it)",
            ));
        }
        Some(max) => Some(i32::try_from(max).map_err(|_| {
            crate::Error::invalid(
                "max_running",
                format!("{max} is more than {} tasks", i32::MAX),
            )
        })?),
        None => None,
    };
    let rate = match limit.rate {
        Some((max_starts, period)) => Some(rate_values(max_starts, period)?),
        None => None,
    };
    crate::store::keys::set_policy(conn, queue, max_running, rate).await
}

/// Removes the key policy of `queue` and its ledger; false when it had
/// none. Its claims go in plain claim order again.
pub async fn remove_key_limit<C: ConnectionTrait>(conn: &C, queue: &str) -> Result<bool> {
    crate::store::keys::remove_policy(conn, queue).await
}

/// Every key policy, with the current use of its busiest keys (at most
/// `max_keys` each): running and waiting tasks per key, and starts in the
/// current window of its rate.
pub async fn key_limits<C: ConnectionTrait>(
    conn: &C,
    now: chrono::DateTime<chrono::Utc>,
    max_keys: usize,
) -> Result<Vec<KeyLimitUse>> {
    let mut listed = Vec::new();
    for policy in crate::store::keys::policies(conn).await? {
        let keys = crate::store::keys::key_uses(conn, &policy, now, max_keys)
            .await?
            .into_iter()
            .map(|(key, used)| KeyUse {
                key,
                running: used.running,
                waiting: used.waiting,
                started_in_window: used.started_in_window,
            })
            .collect();
        listed.push(KeyLimitUse {
            queue: policy.queue,
            max_running: policy.max_running,
            max_starts: policy.max_starts,
            period: policy
                .period_ms
                .map(|ms| std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            keys,
        });
    }
    Ok(listed)
}

/// A key policy and the use of its busiest keys.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyLimitUse {
    /// The queue.
    pub queue: String,
    /// Most running tasks per key.
    pub max_running: Option<i32>,
    /// Most starts per key in one window.
    pub max_starts: Option<i32>,
    /// The window.
    pub period: Option<std::time::Duration>,
    /// The busiest keys.
    pub keys: Vec<KeyUse>,
}

/// One key's current use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyUse {
    /// The key.
    pub key: String,
    /// Its running tasks.
    pub running: i64,
    /// Its tasks waiting (due or scheduled).
    pub waiting: i64,
    /// Its starts in the window that ends now (with a rate).
    pub started_in_window: i64,
}
