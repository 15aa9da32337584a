//! Cancelling a running task (issue 8): its body sees the signal, stops on
//! its own or is stopped after the grace period, and the history row says
//! "cancelled".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{
    Config, Event, Registry, Runner, Task, TaskContext, TaskError, admin, completed_task, task_row,
};
use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::fixture::{TestDb, wait_for};

on_all_backends!(
    a_running_task_sees_the_cancel_and_stops,
    a_body_that_ignores_the_cancel_is_stopped_after_the_grace_period,
);

/// Works until cancelled, then stops cleanly; says whether it saw it.
#[derive(Clone, Default)]
struct Cooperative {
    saw_cancel: Arc<AtomicBool>,
}

impl Task for Cooperative {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "cancel.cooperative"
    }
    async fn run(&self, _: (), ctx: TaskContext) -> Result<(), TaskError> {
        assert!(!ctx.is_cancelled());
        tokio::select! {
            () = ctx.cancelled() => {
                self.saw_cancel.store(ctx.is_cancelled(), Ordering::SeqCst);
                Err(TaskError::msg("saw the cancel; left the files as they were"))
            }
            () = tokio::time::sleep(Duration::from_secs(3_600)) => Ok(()),
        }
    }
}

/// Sets its flag when its body is dropped (stopped from outside).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Never looks at the cancel.
#[derive(Clone, Default)]
struct Stubborn {
    dropped: Arc<AtomicBool>,
}

impl Task for Stubborn {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "cancel.stubborn"
    }
    async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
        let _flag = DropFlag(Arc::clone(&self.dropped));
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        Ok(())
    }
}

/// Waits until task `id` is locked by a runner.
async fn wait_running(t: &TestDb, id: i32) {
    let db = t.db.clone();
    wait_for("the task to be running", Duration::from_secs(20), || {
        let db = db.clone();
        async move {
            task_row::Entity::find_by_id(id)
                .one(&db)
                .await
                .unwrap()
                .is_some_and(|row| row.locked_by.is_some())
        }
    })
    .await;
}

/// Waits for the history row of a cancelled task and returns it.
async fn wait_cancelled(t: &TestDb, name: &str) -> completed_task::Model {
    let db = t.db.clone();
    let name = name.to_owned();
    wait_for("the cancelled history row", Duration::from_secs(30), || {
        let (db, name) = (db.clone(), name.clone());
        async move {
            completed_task::Entity::find()
                .filter(completed_task::Column::TaskName.eq(name))
                .one(&db)
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;
    completed_task::Entity::find()
        .filter(completed_task::Column::TaskName.eq(name))
        .one(&t.db)
        .await
        .unwrap()
        .unwrap()
}

async fn a_running_task_sees_the_cancel_and_stops(t: TestDb) -> TestDb {
    let cooperative = Cooperative::default();
    let registry = Registry::new();
    registry.register(cooperative.clone());
    let config = Config::builder()
        .cancel_grace(Duration::from_secs(60))
        .build()
        .unwrap();
    let queue = t.queue(registry, config);
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    queue.events().subscribe(move |event| {
        let name = match event {
            Event::Started { .. } => "started",
            Event::Cancelled { .. } => "cancelled",
            Event::Error { .. } => "error",
            Event::Failed { .. } => "failed",
            Event::Finished { .. } => "finished",
            _ => return,
        };
        seen.lock().unwrap().push(name);
    });
    let task = queue
        .enqueue::<Cooperative>(&())
        .await
        .unwrap()
        .into_task()
        .unwrap();
    // A waiting task next to it is cancelled at once.
    let waiting = queue
        .enqueue::<Cooperative>(&())
        .schedule(3_600)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_running(&t, task.id).await;

    let done = admin::cancel(&t.db, &[task.id, waiting.id], Utc::now())
        .await
        .unwrap();
    assert_eq!(
        done.stopping,
        vec![task.id],
        "the running one is asked to stop"
    );
    assert_eq!(
        done.cancelled.len(),
        1,
        "the waiting one is cancelled at once"
    );
    assert_eq!(done.cancelled[0].last_error, admin::CANCELLED_ERROR);
    assert!(done.cancelled[0].cancelled_at.is_some());
    let again = admin::cancel(&t.db, &[task.id], Utc::now()).await.unwrap();
    assert!(again.is_empty(), "asking twice changes nothing");

    let history = completed_task::Entity::find()
        .filter(completed_task::Column::LastError.starts_with(admin::CANCELLED_RUNNING_ERROR))
        .all(&t.db);
    let db = t.db.clone();
    wait_for(
        "the running task's history row",
        Duration::from_secs(30),
        || {
            let db = db.clone();
            async move {
                !completed_task::Entity::find()
                    .filter(
                        completed_task::Column::LastError
                            .starts_with(admin::CANCELLED_RUNNING_ERROR),
                    )
                    .all(&db)
                    .await
                    .unwrap()
                    .is_empty()
            }
        },
    )
    .await;
    let rows = history.await.unwrap();
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert!(row.cancelled_at.is_some(), "the history says cancelled");
    assert!(
        row.failed_at.is_some(),
        "and failed, as Django's admin shows it"
    );
    assert!(
        row.last_error.contains("stopped on its own")
            && row.last_error.contains("left the files as they were"),
        "{}",
        row.last_error
    );
    assert!(cooperative.saw_cancel.load(Ordering::SeqCst));
    assert!(
        task_row::Entity::find_by_id(task.id)
            .one(&t.db)
            .await
            .unwrap()
            .is_none(),
        "a cancelled task is not retried"
    );
    assert_eq!(
        *events.lock().unwrap(),
        vec!["started", "cancelled", "finished"]
    );
    t
}

async fn a_body_that_ignores_the_cancel_is_stopped_after_the_grace_period(t: TestDb) -> TestDb {
    let stubborn = Stubborn::default();
    let registry = Registry::new();
    registry.register(stubborn.clone());
    let config = Config::builder()
        .cancel_grace(Duration::from_millis(300))
        .build()
        .unwrap();
    let queue = t.queue(registry, config);
    let task = queue
        .enqueue::<Stubborn>(&())
        .repeat(60)
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_running(&t, task.id).await;
    let done = admin::cancel(&t.db, &[task.id], Utc::now()).await.unwrap();
    assert_eq!(done.stopping, vec![task.id]);
    let row = wait_cancelled(&t, "cancel.stubborn").await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert!(row.cancelled_at.is_some());
    assert!(
        row.last_error.starts_with(admin::CANCELLED_RUNNING_ERROR)
            && row.last_error.contains("0.3 s grace period"),
        "{}",
        row.last_error
    );
    assert!(
        stubborn.dropped.load(Ordering::SeqCst),
        "the body was stopped"
    );
    assert!(
        task_row::Entity::find()
            .all(&t.db)
            .await
            .unwrap()
            .is_empty(),
        "a cancel ends a repeat chain: nothing is left in the queue"
    );
    t
}
