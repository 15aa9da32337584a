//! Fleet controls: pause and resume a queue for every runner, and drain a
//! runner.
//!
//! - **Pause** is persisted (`background_task_queue_pause`): every runner
//!   on the database reads the paused queues at each heartbeat (a third of
//!   the lease, 10 s by default) and claims nothing of them from then on.
//!   Tasks of a paused queue still enqueue, and tasks already claimed
//!   (running, or claimed ahead of a free slot) finish. **Resume** takes
//!   the row away; runners claim the queue again at their next heartbeat.
//!   The default (unnamed) queue can be paused too (`None` here, the token
//!   `(default)` on the command line and in the dashboard).
//! - **Drain** asks one runner to stop claiming, finish every task it
//!   holds (each within its `MAX_RUN_TIME`), and exit. It is persisted on
//!   the runner's registry row, so an operator can ask from anywhere (the
//!   dashboard, the JSON API, `bgtasks drain`); the runner sees it at its
//!   next heartbeat. `bgtasks process` also drains on SIGQUIT. An embedded
//!   runner stops claiming and finishes; the app learns of it through
//!   [`crate::RunnerHandle::drain_requested`] and decides when to exit.
//!
//! Both show in the metrics: `background_tasks_queue_paused{queue}`,
//! `background_tasks_runners_draining` (from the database, on every
//! process) and `background_tasks_draining` (this runner).

use std::sync::{Arc, Mutex, PoisonError};

use sea_orm::ConnectionTrait;

use crate::error::{Error, Result};

/// The name a paused queue has in `background_task_queue_pause`: `""` for
/// the default queue, which no named queue can be (names are 1 to 190
/// characters).
fn stored(queue: Option<&str>) -> Result<&str> {
    match queue {
        None => Ok(""),
        Some(name) => {
            crate::config::validate_queue_name(name)?;
            Ok(name)
        }
    }
}

/// Pauses `queue` (`None`: the default queue) for every runner on the
/// database, from their next heartbeat. True when it was not paused yet.
///
/// Unless `even_if_unknown`, a queue nothing names is refused as a likely
/// typo ([`check_known`]), and nothing is written.
///
/// # Errors
/// [`Error::InvalidOption`] for a name that is no queue name or an
/// unknown queue; a database error.
pub async fn pause<C: ConnectionTrait>(
    conn: &C,
    queue: Option<&str>,
    even_if_unknown: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    let name = stored(queue)?;
    if !even_if_unknown {
        check_known(conn, queue).await?;
    }
    crate::store::controls::pause(conn, name, now).await
}

/// Refuses a queue nothing names (no task, history row, schedule, limit,
/// pause or runner started with `--queue`): a likely typo. The default
/// queue is always known.
///
/// # Errors
/// [`Error::InvalidOption`] for a name that is no queue name or an
/// unknown queue; a database error.
pub async fn check_known<C: ConnectionTrait>(conn: &C, queue: Option<&str>) -> Result<()> {
    let name = stored(queue)?;
    if crate::store::controls::queue_is_known(conn, name).await? {
        return Ok(());
    }
    Err(Error::invalid(
        "queue",
        format!(
            "nothing names queue {name:?} (no task, history row, schedule, limit or runner): \
             check its spelling, or pause it anyway before its first task (--new on the \
             command line, \"new\": true in the API)"
        ),
    ))
}

/// Resumes `queue` (`None`: the default queue): runners claim its tasks
/// again from their next heartbeat. False when it was not paused.
///
/// # Errors
/// [`Error::InvalidOption`] for a name that is no queue name; a database error.
pub async fn resume<C: ConnectionTrait>(conn: &C, queue: Option<&str>) -> Result<bool> {
    crate::store::controls::resume(conn, stored(queue)?).await
}

/// A paused queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Paused {
    /// Its name; `None` for the default queue.
    pub queue: Option<String>,
    /// When it was paused.
    pub paused_at: chrono::DateTime<chrono::Utc>,
}

/// Every paused queue, the default queue first, then by name.
///
/// # Errors
/// A database error.
pub async fn paused<C: ConnectionTrait>(conn: &C) -> Result<Vec<Paused>> {
    Ok(crate::store::controls::paused(conn)
        .await?
        .into_iter()
        .map(|row| Paused {
            queue: (!row.queue.is_empty()).then_some(row.queue),
            paused_at: row.paused_at,
        })
        .collect())
}

/// Asks runner `runner_id` (as `bgtasks runners` and the dashboard show
/// it) to drain. True when this call asked; false when it was asked
/// already.
///
/// # Errors
/// [`Error::InvalidOption`] when no runner of that id is registered; a
/// database error.
pub async fn drain<C: ConnectionTrait>(
    conn: &C,
    runner_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool> {
    crate::store::controls::request_drain(conn, runner_id, now)
        .await?
        .ok_or_else(|| {
            Error::invalid(
                "runner",
                format!(
                    "no runner {runner_id:?} is registered (it stopped, or the id is mistyped); \
                     `bgtasks stats` and the dashboard's runners page list them"
                ),
            )
        })
}

/// What a runner reads at each heartbeat and its claims obey: the queues
/// under a global concurrency limit, the paused queues, and whether it was
/// asked to drain. One per [`crate::Queue`] (shared by its clones).
#[derive(Debug)]
pub(crate) struct Controls {
    global_limits: Mutex<Arc<[String]>>,
    /// Paused queues as stored (`""`: the default queue).
    paused: Mutex<Arc<[String]>>,
    drain: tokio::sync::watch::Sender<bool>,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            global_limits: Mutex::new(Arc::from([])),
            paused: Mutex::new(Arc::from([])),
            drain: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Controls {
    /// Queues with a global concurrency limit, as last read.
    pub(crate) fn globally_limited(&self) -> Arc<[String]> {
        Arc::clone(
            &self
                .global_limits
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    pub(crate) fn set_globally_limited(&self, queues: Vec<String>) {
        *self
            .global_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = queues.into();
    }

    /// Paused queues, as last read (`""`: the default queue).
    pub(crate) fn paused(&self) -> Arc<[String]> {
        Arc::clone(&self.paused.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether `queue` (`None`: the default queue) is paused.
    pub(crate) fn is_paused(&self, queue: Option<&str>) -> bool {
        let name = queue.unwrap_or_default();
        self.paused().iter().any(|paused| paused == name)
    }

    /// Sets the paused queues; true when one was resumed (so the runner
    /// looks for its tasks at once).
    pub(crate) fn set_paused(&self, mut queues: Vec<String>) -> bool {
        queues.sort_unstable();
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        let resumed = paused.iter().any(|queue| !queues.contains(queue));
        *paused = queues.into();
        resumed
    }

    /// Marks the drain as requested; true the first time.
    pub(crate) fn request_drain(&self) -> bool {
        !self.drain.send_replace(true)
    }

    /// Whether a drain was requested.
    pub(crate) fn draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// Resolves once a drain is requested.
    pub(crate) fn drain_requested(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut seen = self.drain.subscribe();
        async move {
            // The sender lives as long as the queue: an error means it is
            // gone, and then no drain will come.
            if seen.wait_for(|draining| *draining).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_is_noticed_and_the_default_queue_is_the_empty_name() {
        let controls = Controls::default();
        assert!(!controls.set_paused(vec!["mail".into(), String::new()]));
        assert!(controls.is_paused(None));
        assert!(controls.is_paused(Some("mail")));
        assert!(!controls.is_paused(Some("sms")));
        assert!(controls.set_paused(vec![String::new()]));
        assert!(!controls.is_paused(Some("mail")));
    }

    #[actix_rt::test]
    async fn a_drain_request_resolves_its_waiters_once() {
        let controls = Controls::default();
        let waiter = controls.drain_requested();
        assert!(!controls.draining());
        assert!(controls.request_drain());
        assert!(!controls.request_drain());
        waiter.await;
        controls.drain_requested().await;
        assert!(controls.draining());
    }
}
