//! Running tasks: start the actor system inside an existing actix `System`
//! (an actix-web app) or standalone, and stop it gracefully.

use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::actors;
use crate::queue::Queue;

/// Default grace period of a shutdown: how long running tasks may take to
/// finish before they are stopped and handed back.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How soon a runner looks for the next task after one finished: the
/// seed's fast mode (its default, SIGUSR1) and slow mode (SIGUSR2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pace {
    /// At once (the default).
    #[default]
    Fast,
    /// After a random pause of 0.5 to 1.5 s, to go easy on the database.
    Slow,
}

impl Pace {
    /// The pause before the next poll; `None` for at once.
    pub(crate) fn pause(self) -> Option<Duration> {
        use std::hash::{BuildHasher, Hasher};
        match self {
            Pace::Fast => None,
            Pace::Slow => {
                // RandomState draws fresh OS randomness for its keys.
                let random = std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish();
                Some(Duration::from_millis(500 + random % 1_000))
            }
        }
    }
}

/// Starts runners.
#[derive(Debug)]
pub struct Runner;

impl Runner {
    /// Starts a runner for `queue` on the current actix `System` (for
    /// example inside an actix-web app's `main`) and returns its handle.
    ///
    /// It runs tasks whose names are in the queue's registry, in the queue's
    /// named queue (or all queues), one at a time, or in async mode
    /// `async_threads × tasks_per_thread` at a time, each executor on its
    /// own thread.
    ///
    /// The runner logs through `tracing`. When nothing receives its logs
    /// (no `tracing` subscriber, no `log` logger), it says so once per
    /// process on stderr, with how to see them.
    ///
    /// # Errors
    /// [`crate::Error::MissingState`] when a registered task requires app
    /// state the registry has no value of ([`crate::Registry::check`]):
    /// nothing is started.
    ///
    /// # Panics
    /// When called outside an actix `System`.
    pub fn start(queue: Queue) -> crate::Result<RunnerHandle> {
        queue.registry().check()?;
        note_when_logs_go_nowhere(&queue);
        tracing::info!(
            runner = queue.runner_id(),
            executors = queue.config().executors(),
            concurrency = queue.config().concurrency(),
            tasks = ?queue.registry().names(),
            "runner started"
        );
        Ok(RunnerHandle {
            running: Arc::new(Mutex::new(Some(actors::start(queue.clone())))),
            queue,
        })
    }

    /// Runs until `shutdown` completes (a signal, a duration, a test's
    /// trigger), then shuts down gracefully with `grace`.
    ///
    /// # Errors
    /// As [`Runner::start`], at once.
    pub async fn run(
        queue: Queue,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> crate::Result<()> {
        let handle = Runner::start(queue)?;
        shutdown.await;
        handle.shutdown(grace).await;
        Ok(())
    }
}

/// Whether this process has already said that its runner's logs go nowhere.
static SAID_LOGS_GO_NOWHERE: AtomicBool = AtomicBool::new(false);

/// Says once per process, on stderr, that a runner started and that
/// nothing receives its logs, when that is so: an embedding app that never
/// installed a subscriber would otherwise see no failed attempt and no
/// database outage.
///
/// Logs reach someone when the current `tracing` dispatcher (scoped or
/// global) is a real subscriber, or, through tracing's `log` feature (which
/// this crate turns on), when a `log` logger such as env_logger is set.
fn note_when_logs_go_nowhere(queue: &Queue) {
    if !logs_go_nowhere() || SAID_LOGS_GO_NOWHERE.swap(true, Ordering::Relaxed) {
        return;
    }
    // Not eprintln!: a closed stderr must not panic the app.
    let _ = writeln!(
        std::io::stderr().lock(),
        "background-tasks: runner {} started ({} at once; tasks: {}). \
         Nothing receives its logs (failed attempts, retries, database errors): \
         install a tracing subscriber at the start of main, for example \
         `tracing_subscriber::fmt().init()` from the tracing-subscriber crate \
         (README: \"Logs\"). This note is printed once.",
        queue.runner_id(),
        queue.config().concurrency(),
        queue.registry().names().join(", "),
    );
}

/// Whether nothing on this thread receives `tracing` events: no subscriber
/// (scoped or global) and no `log` logger.
fn logs_go_nowhere() -> bool {
    let no_subscriber = tracing::dispatcher::get_default(|dispatch| {
        dispatch.is::<tracing::subscriber::NoSubscriber>()
    });
    no_subscriber && log::max_level() == log::LevelFilter::Off
}

/// A running runner: cheap to clone (put it in `web::Data`), and clones
/// share the runner. Dropping it does not stop it; call
/// [`RunnerHandle::shutdown`].
#[derive(Clone)]
pub struct RunnerHandle {
    queue: Queue,
    /// `None` once shut down.
    running: Arc<Mutex<Option<actors::Running>>>,
}

impl RunnerHandle {
    /// The queue it runs: enqueue through it (also with
    /// [`Queue::enqueue_with`] inside your own transaction) and the runner
    /// of this process wakes at once.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Switches between fast and slow polling after a finished task.
    pub fn set_pace(&self, pace: Pace) {
        if let Some(running) = self.lock().as_ref() {
            running.set_pace(pace);
        }
    }

    /// Stops claiming, waits up to `grace` for running tasks to finish and
    /// record their outcome, then stops the rest and hands their tasks back
    /// unlocked, without counting an attempt, so another runner can take
    /// them. Returns when every actor has stopped. Calling it again, or on
    /// a clone, does nothing.
    pub async fn shutdown(&self, grace: Duration) {
        let running = self.lock().take();
        if let Some(running) = running {
            running.shutdown(grace).await;
            tracing::info!(runner = self.queue.runner_id(), "runner stopped");
        }
    }

    /// Asks this runner to drain: it claims no more tasks and finishes the
    /// ones it holds. Recorded on its registry row (so the dashboard and
    /// the metrics show it) as an operator's request would be; a database
    /// that is away only costs that record. Finish with
    /// [`RunnerHandle::shutdown`] once [`RunnerHandle::drain_requested`]
    /// resolves, with a grace long enough for the tasks held.
    pub async fn drain(&self) {
        let queue = &self.queue;
        if queue.controls().request_drain() {
            tracing::warn!(
                runner = queue.runner_id(),
                "draining: claiming no more tasks; finishing the ones held"
            );
        }
        let now = queue.config().clock().now();
        if let Err(err) = crate::controls::drain(queue.db(), queue.runner_id(), now).await {
            tracing::warn!("could not record the drain on this runner's registry row: {err}");
        }
    }

    /// Resolves once this runner was asked to drain: by
    /// [`RunnerHandle::drain`], or by an operator (the dashboard, `bgtasks
    /// drain`), seen at its next heartbeat. It then claims nothing more;
    /// the app decides when to call [`RunnerHandle::shutdown`] (`bgtasks
    /// process` does at once, with `MAX_RUN_TIME` as the grace).
    pub fn drain_requested(&self) -> impl Future<Output = ()> + use<> {
        self.queue.controls().drain_requested()
    }

    /// Whether this runner was asked to drain.
    pub fn is_draining(&self) -> bool {
        self.queue.controls().draining()
    }

    /// Whether [`RunnerHandle::shutdown`] has been called.
    pub fn is_shut_down(&self) -> bool {
        self.lock().is_none()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<actors::Running>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHandle")
            .field("runner_id", &self.queue.runner_id())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Issue 16: the runner's note on stderr is for a process where nothing
    // receives its logs; a subscriber, even one scoped to the thread that
    // starts the runner, silences it. (No test here sets a `log` logger.)
    #[test]
    fn logs_go_nowhere_without_a_subscriber() {
        assert!(logs_go_nowhere());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || assert!(!logs_go_nowhere()));
        assert!(logs_go_nowhere());
    }

    // Checklist 45: fast mode polls at once; slow mode waits 0.5 to 1.5 s.
    #[test]
    fn pace_pauses() {
        assert_eq!(Pace::Fast.pause(), None);
        for _ in 0..100 {
            let pause = Pace::Slow.pause().unwrap();
            assert!(pause >= Duration::from_millis(500) && pause < Duration::from_millis(1500));
        }
    }
}
