//! Tasks that run after other tasks (issue 20): `.after(ids)` and
//! workflows of named steps; release exactly once, cancellation of what a
//! failure leaves unable to run, results read by the step, bad graphs
//! refused with nothing written, and 3 runner processes executing a
//! 1,000-step workflow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{
    Batch, Config, DependencyCounts, DependencyState, Enqueued, Error, Event, Queue, Registry,
    Runner, Task, TaskContext, TaskError, TaskSpec, Workflow, admin, completed_task, task_row,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter,
    Statement,
};

use crate::child::{ChildRunner, Ledger, create_ledger};
use crate::fixture::{TestDb, wait_for};
use crate::tasks::{Add, Fail};

on_all_backends!(
    a_task_after_others_waits_for_them_and_reads_their_results,
    a_failure_cancels_what_waits_for_it_unless_it_runs_anyway,
    a_dependency_that_already_succeeded_is_already_done,
    cancelling_a_waiting_dependency_cancels_its_dependents,
    bad_dependencies_are_refused_and_nothing_is_written,
    operators_cannot_move_a_held_step,
    a_batch_callback_runs_once_all_finished_and_counts_them,
    an_on_success_batch_cancels_its_callback_at_a_failure,
    a_cancelled_step_stays_settled_when_its_other_dependencies_finish,
    a_deleted_dependency_cancels_its_steps_and_a_deleted_step_is_forgotten,
    steps_leave_the_apps_pool_working_after_the_runner_stops,
    three_runner_processes_run_a_1000_step_workflow_in_order,
    a_task_with_17000_dependents_releases_them_all,
);

const WAIT: Duration = Duration::from_secs(60);

/// Sums the results of the tasks it ran after, and says how each ended.
#[derive(Clone, Default)]
struct Sum {
    seen: Arc<Mutex<Vec<(i32, DependencyState)>>>,
}

impl Task for Sum {
    type Params = ();
    type Output = i64;
    fn name() -> &'static str {
        "workflows.sum"
    }
    async fn run(&self, (): (), ctx: TaskContext) -> Result<i64, TaskError> {
        let mut total = 0;
        for dep in ctx.dependencies() {
            self.seen.lock().unwrap().push((dep.task_id, dep.state));
            if dep.state == DependencyState::Succeeded {
                total += ctx.dependency_result::<i64>(dep.task_id)?;
            }
        }
        Ok(total)
    }
}

fn config() -> Config {
    Config::builder()
        .run_async(true)
        .async_threads(2)
        .sleep(Duration::from_millis(100))
        .max_attempts(1)
        .build()
        .unwrap()
}

fn registry(sum: &Sum) -> Registry {
    let registry = Registry::new();
    registry.register(Add).register(Fail).register(sum.clone());
    registry
}

/// A queue on a pool of its own, so each test's runners start from a
/// pool of their own (`steps_leave_the_apps_pool_working_after_the_runner_stops`
/// runs one on the test's pool).
async fn own_queue(t: &TestDb, registry: Registry) -> Queue {
    let db = background_tasks::db::connect(Some(&t.url)).await.unwrap();
    Queue::with_parts(db, registry, config())
}

fn created(enqueued: Enqueued) -> task_row::Model {
    enqueued.into_task().expect("a row was created")
}

/// A `Sum` enqueued after task `id`.
async fn sum_after(queue: &Queue, id: i32, run_anyway: bool) -> task_row::Model {
    created(
        queue
            .enqueue::<Sum>(&())
            .after([id])
            .run_anyway(run_anyway)
            .await
            .unwrap(),
    )
}

async fn history(db: &DatabaseConnection) -> HashMap<i32, completed_task::Model> {
    completed_task::Entity::find()
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.task_id.expect("this crate writes task_id"), row))
        .collect()
}

async fn wait_history(t: &TestDb, count: u64) {
    let db = t.db.clone();
    wait_for(&format!("{count} history rows"), WAIT, || {
        let db = db.clone();
        async move { completed_task::Entity::find().count(&db).await.unwrap() >= count }
    })
    .await;
}

async fn count(db: &DatabaseConnection, table: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT COUNT(*) FROM {table}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

/// Nothing waits once everything ran: no task is left, and the step rows
/// and edges that stay are those of tasks with a history row (the record
/// of their workflow, deleted with it).
async fn no_step_left(db: &DatabaseConnection) {
    assert_eq!(count(db, "background_task").await, 0);
    for table in ["background_task_step", "background_task_dependency"] {
        assert_eq!(
            count(
                db,
                &format!(
                    "{table} x WHERE NOT EXISTS (SELECT 1 FROM background_task_completedtask h \
                     WHERE h.task_id = x.task_id)"
                )
            )
            .await,
            0,
            "{table}: rows of tasks without history"
        );
    }
}

async fn a_task_after_others_waits_for_them_and_reads_their_results(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    let a = created(queue.enqueue::<Add>(&(2, 3)).await.unwrap());
    let b = created(queue.enqueue::<Add>(&(4, 5)).await.unwrap());
    let c = created(
        queue
            .enqueue::<Sum>(&())
            .after([b.id, a.id, a.id])
            .await
            .unwrap(),
    );
    // Held: not due for any runner, Django's included.
    assert_eq!(c.run_at.format("%Y").to_string(), "9999");
    let released = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&released);
    queue.events().subscribe(move |event| {
        if let Event::Released { task_id } = event {
            seen.lock().unwrap().push(*task_id);
        }
    });

    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 3).await;
    runner.shutdown(Duration::from_secs(5)).await;

    let done = history(&t.db).await;
    let step = &done[&c.id];
    assert_eq!(step.failed_at, None, "{step:?}");
    assert_eq!(step.result.as_deref(), Some("14"), "5 + 9");
    assert!(
        step.run_at >= done[&a.id].run_at && step.run_at >= done[&b.id].run_at,
        "the step finished after both"
    );
    let mut seen = sum.seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            (a.id, DependencyState::Succeeded),
            (b.id, DependencyState::Succeeded)
        ]
    );
    assert_eq!(*released.lock().unwrap(), [c.id], "released once");
    no_step_left(&t.db).await;
    t
}

async fn a_failure_cancels_what_waits_for_it_unless_it_runs_anyway(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    let fails = created(queue.enqueue::<Fail>(&(1,)).await.unwrap());
    let after = sum_after(&queue, fails.id, false).await;
    let after_after = sum_after(&queue, after.id, false).await;
    let anyway = sum_after(&queue, fails.id, true).await;
    let cancelled_events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&cancelled_events);
    queue.events().subscribe(move |event| {
        if let Event::Cancelled { task_id, .. } = event {
            seen.lock().unwrap().push(*task_id);
        }
    });

    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 4).await;
    runner.shutdown(Duration::from_secs(5)).await;

    let done = history(&t.db).await;
    assert!(done[&fails.id].failed_at.is_some());
    for id in [after.id, after_after.id] {
        let row = &done[&id];
        assert!(row.cancelled_at.is_some(), "{row:?}");
        assert!(
            row.last_error.contains("did not succeed") && row.last_error.contains("run_anyway"),
            "{}",
            row.last_error
        );
        assert_eq!(row.attempts, 0, "it never ran");
    }
    assert!(done[&after.id].last_error.contains(&fails.id.to_string()));
    assert!(
        done[&after_after.id]
            .last_error
            .contains(&after.id.to_string())
    );
    assert_eq!(done[&anyway.id].failed_at, None);
    assert_eq!(
        *sum.seen.lock().unwrap(),
        [(fails.id, DependencyState::Failed)],
        "only the step that runs anyway ran, and saw the failure"
    );
    let mut events = cancelled_events.lock().unwrap().clone();
    events.sort_unstable();
    assert_eq!(events, [after.id, after_after.id]);
    no_step_left(&t.db).await;
    t
}

async fn a_dependency_that_already_succeeded_is_already_done(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    let a = created(queue.enqueue::<Add>(&(20, 22)).await.unwrap());
    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 1).await;
    // `a` finished before this enqueue: its history row says how.
    let b = sum_after(&queue, a.id, false).await;
    assert!(
        b.run_at.format("%Y").to_string() != "9999",
        "not held: {b:?}"
    );
    wait_history(&t, 2).await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(history(&t.db).await[&b.id].result.as_deref(), Some("42"));
    no_step_left(&t.db).await;
    t
}

async fn cancelling_a_waiting_dependency_cancels_its_dependents(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    let later = created(queue.enqueue::<Add>(&(1, 1)).schedule(3_600).await.unwrap());
    let step = sum_after(&queue, later.id, false).await;
    let anyway = sum_after(&queue, later.id, true).await;
    let now = chrono::Utc::now();
    let cancellation = admin::cancel(&t.db, &[later.id], now).await.unwrap();
    let mut ids: Vec<i32> = cancellation
        .cancelled
        .iter()
        .map(|row| row.task_id.unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [later.id, step.id], "the dependent went with it");
    // The one that runs anyway is due now.
    let released = task_row::Entity::find_by_id(anyway.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(released.run_at <= chrono::Utc::now(), "{released:?}");
    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 3).await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        *sum.seen.lock().unwrap(),
        [(later.id, DependencyState::Cancelled)]
    );
    no_step_left(&t.db).await;
    t
}

fn refused(result: background_tasks::Result<impl std::fmt::Debug>, says: &str) {
    match result {
        Err(Error::InvalidOption { ref reason, .. }) if reason.contains(says) => {}
        other => panic!("expected a refusal saying {says:?}, got {other:?}"),
    }
}

async fn bad_dependencies_are_refused_and_nothing_is_written(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    refused(
        queue.enqueue::<Sum>(&()).after([987_654]).await,
        "task 987654 is not waiting or running",
    );
    refused(
        queue.enqueue::<Sum>(&()).after([1]).repeat(60).await,
        "cannot repeat",
    );
    let cycle = Workflow::new("loop")
        .step("start", TaskSpec::new::<Add>(&(1, 2)))
        .step_after("a", TaskSpec::new::<Sum>(&()), ["start", "b"])
        .step_after("b", TaskSpec::new::<Sum>(&()), ["a"]);
    refused(queue.enqueue_workflow(cycle).await, "has a cycle");
    let unknown = Workflow::new("typo")
        .step("start", TaskSpec::new::<Add>(&(1, 2)))
        .step_after("end", TaskSpec::new::<Sum>(&()), ["strat"]);
    refused(queue.enqueue_workflow(unknown).await, "\"strat\"");
    // A workflow whose last step is refused writes none of its steps.
    let late = Workflow::new("late")
        .step("start", TaskSpec::new::<Add>(&(1, 2)))
        .step_after("end", TaskSpec::new::<Sum>(&()).after([555_555]), ["start"]);
    refused(queue.enqueue_workflow(late).await, "task 555555");
    assert_eq!(count(&t.db, "background_task").await, 0);

    // A dependency that already failed.
    let fails = created(queue.enqueue::<Fail>(&(1,)).await.unwrap());
    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 1).await;
    runner.shutdown(Duration::from_secs(5)).await;
    refused(
        queue.enqueue::<Sum>(&()).after([fails.id]).await,
        "already failed",
    );
    assert_eq!(count(&t.db, "background_task").await, 0);
    // ... unless the step runs anyway: then it is due at once.
    let anyway = sum_after(&queue, fails.id, true).await;
    assert!(anyway.run_at <= chrono::Utc::now());
    assert_eq!(count(&t.db, "background_task_step").await, 1);
    t
}

async fn operators_cannot_move_a_held_step(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    let later = created(queue.enqueue::<Add>(&(1, 1)).schedule(3_600).await.unwrap());
    let step = sum_after(&queue, later.id, false).await;
    let moved = admin::run_now(&t.db, &[step.id], chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(moved, 0, "run now leaves a held step held");
    // remove_existing_tasks of an identical task leaves it too.
    queue
        .enqueue::<Sum>(&())
        .remove_existing_tasks(true)
        .await
        .unwrap();
    let still = task_row::Entity::find_by_id(step.id)
        .one(&t.db)
        .await
        .unwrap()
        .expect("the held step stays");
    assert_eq!(still.run_at, step.run_at);
    t
}

/// Steps: a start, then 10 rounds of a fan-out of 98 and their fan-in,
/// then 9 after the last fan-in: 1 + 10 * 99 + 9 = 1,000.
fn big_workflow() -> (Workflow, Vec<(String, Vec<String>)>) {
    let mut graph: Vec<(String, Vec<String>)> = vec![("start".into(), Vec::new())];
    let mut last = "start".to_owned();
    for round in 0..10 {
        let fans: Vec<String> = (0..98).map(|i| format!("r{round}-fan{i}")).collect();
        for fan in &fans {
            graph.push((fan.clone(), vec![last.clone()]));
        }
        let join = format!("r{round}-join");
        graph.push((join.clone(), fans));
        last = join;
    }
    for i in 0..9 {
        graph.push((format!("tail{i}"), vec![last.clone()]));
    }
    assert_eq!(graph.len(), 1_000);
    let mut workflow = Workflow::new("thousand");
    for (job, (name, after)) in graph.iter().enumerate() {
        let spec = TaskSpec::new::<Ledger>(&(i64::try_from(job).unwrap(), 0));
        workflow = workflow.step_after(name.clone(), spec, after.clone());
    }
    (workflow, graph)
}

async fn three_runner_processes_run_a_1000_step_workflow_in_order(t: TestDb) -> TestDb {
    create_ledger(&t.db).await;
    let queue = Queue::new(t.db.clone());
    let (workflow, graph) = big_workflow();
    let ids = queue.enqueue_workflow(workflow).await.unwrap();
    assert_eq!(ids.len(), 1_000);
    assert_eq!(
        count(&t.db, "background_task_dependency").await,
        10 * 98 * 2 + 9
    );
    let children: Vec<ChildRunner> = (0..3)
        .map(|_| ChildRunner::spawn(&t.url, 4, Duration::from_secs(10)))
        .collect();
    let db = t.db.clone();
    wait_for(
        "3 runners to run the 1,000 steps",
        Duration::from_secs(300),
        || {
            let db = db.clone();
            async move { completed_task::Entity::find().count(&db).await.unwrap() == 1_000 }
        },
    )
    .await;
    for child in children {
        child.stop();
    }
    // The ledger's ids are in the order the bodies ran.
    let rows =
        t.db.query_all_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT id, job FROM bgt_ledger",
        ))
        .await
        .unwrap();
    let mut ran_at: HashMap<i64, i64> = HashMap::new();
    for row in rows {
        let (id, job): (i64, i64) = (
            row.try_get_by_index(0).unwrap(),
            row.try_get_by_index(1).unwrap(),
        );
        assert!(ran_at.insert(job, id).is_none(), "step {job} ran twice");
    }
    assert_eq!(ran_at.len(), 1_000, "every step ran");
    let index: HashMap<&str, i64> = graph
        .iter()
        .enumerate()
        .map(|(job, (name, _))| (name.as_str(), i64::try_from(job).unwrap()))
        .collect();
    for (job, (name, after)) in graph.iter().enumerate() {
        for dep in after {
            assert!(
                ran_at[&index[dep.as_str()]] < ran_at[&i64::try_from(job).unwrap()],
                "{name} ran before {dep}, which it runs after"
            );
        }
    }
    let failed = completed_task::Entity::find()
        .filter(completed_task::Column::FailedAt.is_not_null())
        .count(&t.db)
        .await
        .unwrap();
    assert_eq!(failed, 0);
    no_step_left(&t.db).await;
    t
}

/// A batch's callback: records the counts it read.
#[derive(Clone, Default)]
struct Tally {
    seen: Arc<Mutex<Vec<DependencyCounts>>>,
}

impl Task for Tally {
    type Params = ();
    type Output = ();
    fn name() -> &'static str {
        "workflows.tally"
    }
    async fn run(&self, (): (), ctx: TaskContext) -> Result<(), TaskError> {
        self.seen.lock().unwrap().push(ctx.dependency_counts());
        Ok(())
    }
}

/// The `BatchFinished` events `queue` fires, as (batch, callback, runs).
fn batch_events(queue: &Queue) -> Arc<Mutex<Vec<(String, i32, bool)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let events = Arc::clone(&seen);
    queue.events().subscribe(move |event| {
        if let Event::BatchFinished {
            batch,
            callback_id,
            callback_runs,
        } = event
        {
            events
                .lock()
                .unwrap()
                .push((batch.clone(), *callback_id, *callback_runs));
        }
    });
    seen
}

async fn a_batch_callback_runs_once_all_finished_and_counts_them(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let tally = Tally::default();
    let registry = registry(&sum);
    registry.register(tally.clone());
    let queue = own_queue(&t, registry).await;
    let events = batch_events(&queue);
    let batch = Batch::new("mixed")
        .tasks((0..3).map(|i| TaskSpec::new::<Add>(&(i, i))))
        .tasks((0..2).map(|i| TaskSpec::new::<Fail>(&(i,))))
        .on_finish(TaskSpec::new::<Tally>(&()));
    let ids = queue.enqueue_batch(batch).await.unwrap();
    assert_eq!(ids.tasks.len(), 5);
    let callback = ids.callback.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 6).await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        *tally.seen.lock().unwrap(),
        [DependencyCounts {
            succeeded: 3,
            failed: 2,
            cancelled: 0
        }],
        "the callback ran once, after all five, and counted them"
    );
    assert_eq!(history(&t.db).await[&callback].failed_at, None);
    assert_eq!(
        *events.lock().unwrap(),
        [("mixed".to_owned(), callback, true)]
    );
    no_step_left(&t.db).await;
    // Bad batches are refused, nothing written.
    refused(
        queue.enqueue_batch(Batch::new("empty")).await,
        "has no task",
    );
    refused(
        queue
            .enqueue_batch(Batch::new("").task(TaskSpec::new::<Add>(&(1, 1))))
            .await,
        "give 1 to 184",
    );
    refused(
        queue
            .enqueue_workflow(Workflow::new("batch:mine").step("a", TaskSpec::new::<Add>(&(1, 1))))
            .await,
        "batches' own",
    );
    assert_eq!(count(&t.db, "background_task").await, 0);
    t
}

async fn an_on_success_batch_cancels_its_callback_at_a_failure(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    let events = batch_events(&queue);
    let batch = Batch::new("strict")
        .tasks((0..2).map(|i| TaskSpec::new::<Add>(&(i, i))))
        .task(TaskSpec::new::<Fail>(&(1,)))
        .on_success(TaskSpec::new::<Sum>(&()));
    let ids = queue.enqueue_batch(batch).await.unwrap();
    let callback = ids.callback.unwrap();
    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 4).await;
    runner.shutdown(Duration::from_secs(5)).await;
    let done = history(&t.db).await;
    assert!(
        done[&callback].cancelled_at.is_some(),
        "{:?}",
        done[&callback]
    );
    assert!(
        sum.seen.lock().unwrap().is_empty(),
        "the callback never ran"
    );
    assert_eq!(
        *events.lock().unwrap(),
        [("strict".to_owned(), callback, false)]
    );
    no_step_left(&t.db).await;
    t
}

/// Records the settlements an event bus reports: batches finished and
/// steps released.
fn settlements(queues: &[&Queue]) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    for queue in queues {
        let seen = Arc::clone(&seen);
        queue.events().subscribe(move |event| match event {
            Event::BatchFinished {
                batch,
                callback_id,
                callback_runs,
            } => seen
                .lock()
                .unwrap()
                .push(format!("batch {batch} {callback_id} runs={callback_runs}")),
            Event::Released { task_id } => {
                seen.lock().unwrap().push(format!("released {task_id}"));
            }
            _ => {}
        });
    }
    seen
}

/// The failure first, the success later (on a runner started only once
/// the failure was written): the callback is cancelled by the failure,
/// and the success that finishes its count later neither releases it nor
/// finishes the batch again.
async fn a_cancelled_step_stays_settled_when_its_other_dependencies_finish(t: TestDb) -> TestDb {
    let sum = Sum::default();
    let on = |queue: &str| {
        Config::builder()
            .run_async(true)
            .sleep(Duration::from_millis(100))
            .max_attempts(1)
            .queue(queue)
            .build()
            .unwrap()
    };
    let pool = || background_tasks::db::connect(Some(&t.url));
    let first = Queue::with_parts(pool().await.unwrap(), registry(&sum), on("first"));
    let second = Queue::with_parts(pool().await.unwrap(), registry(&sum), on("second"));
    let seen = settlements(&[&first, &second]);
    let batch = Batch::new("apart")
        .task(TaskSpec::new::<Fail>(&(1,)).queue("first"))
        .task(TaskSpec::new::<Add>(&(2, 3)).queue("second"))
        .on_success(TaskSpec::new::<Sum>(&()));
    let callback = first.enqueue_batch(batch).await.unwrap().callback.unwrap();

    let runner = Runner::start(first).unwrap();
    wait_history(&t, 2).await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert!(history(&t.db).await[&callback].cancelled_at.is_some());
    let runner = Runner::start(second).unwrap();
    wait_history(&t, 3).await;
    runner.shutdown(Duration::from_secs(5)).await;

    assert_eq!(
        *seen.lock().unwrap(),
        [format!("batch apart {callback} runs=false")],
        "settled once, by the failure"
    );
    assert!(
        sum.seen.lock().unwrap().is_empty(),
        "the callback never ran"
    );
    assert_eq!(history(&t.db).await.len(), 3);
    no_step_left(&t.db).await;
    t
}

/// A dependency deleted while it waited leaves no outcome: the runners'
/// sweep cancels the steps after it (with a reason that says so) and
/// releases those that run anyway. A step deleted while it waited is not
/// released when its dependency finishes, and its rows are forgotten.
async fn a_deleted_dependency_cancels_its_steps_and_a_deleted_step_is_forgotten(
    t: TestDb,
) -> TestDb {
    let sum = Sum::default();
    let queue = own_queue(&t, registry(&sum)).await;
    let seen = settlements(&[&queue]);
    let gone = created(queue.enqueue::<Add>(&(1, 2)).await.unwrap());
    let after = sum_after(&queue, gone.id, false).await;
    let anyway = sum_after(&queue, gone.id, true).await;
    let kept = created(queue.enqueue::<Add>(&(3, 4)).await.unwrap());
    let deleted_step = sum_after(&queue, kept.id, false).await;
    assert_eq!(
        admin::delete_tasks(&t.db, &[gone.id, deleted_step.id])
            .await
            .unwrap(),
        2
    );

    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 3).await;
    runner.shutdown(Duration::from_secs(5)).await;

    let done = history(&t.db).await;
    let cancelled = &done[&after.id];
    assert!(cancelled.cancelled_at.is_some(), "{cancelled:?}");
    assert!(
        cancelled
            .last_error
            .contains("left the queue without an outcome")
            && cancelled.last_error.contains(&gone.id.to_string()),
        "{}",
        cancelled.last_error
    );
    assert_eq!(done[&anyway.id].failed_at, None);
    assert_eq!(
        *sum.seen.lock().unwrap(),
        [(gone.id, DependencyState::Cancelled)],
        "only the step that runs anyway ran, and saw its dependency cancelled"
    );
    assert!(done.contains_key(&kept.id));
    assert!(!done.contains_key(&deleted_step.id));
    assert_eq!(done.len(), 3);
    assert_eq!(*seen.lock().unwrap(), [format!("released {}", anyway.id)]);
    no_step_left(&t.db).await;
    t
}

/// An application that embeds a runner on its own pool, stops the runner
/// and goes on: the steps read their dependencies on the runtime the
/// runner was started on, not on the executors' threads, whose runtimes
/// end with the runner (a connection opened there would fail the
/// application's next query).
async fn steps_leave_the_apps_pool_working_after_the_runner_stops(t: TestDb) -> TestDb {
    const STEPS: usize = 40;
    let sum = Sum::default();
    let config = Config::builder()
        .run_async(true)
        .async_threads(2)
        .tasks_per_thread(STEPS / 2)
        .sleep(Duration::from_millis(100))
        .build()
        .unwrap();
    let queue = t.queue(registry(&sum), config);
    let root = created(queue.enqueue::<Add>(&(1, 1)).await.unwrap());
    for _ in 0..STEPS {
        sum_after(&queue, root.id, false).await;
    }
    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 1 + STEPS as u64).await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(sum.seen.lock().unwrap().len(), STEPS);
    // Every connection the pool holds serves the application again.
    let reads = (0..STEPS).map(|_| count(&t.db, "background_task_completedtask"));
    for read in futures_util::future::join_all(reads).await {
        assert_eq!(read, 1 + STEPS as i64);
    }
    t
}

/// More dependents than one statement may bind on SQLite (32,766 values;
/// an id list is padded to a power of two, 32,768 for 17,000): the outcome
/// that releases them goes in chunks, so it neither fails nor retries for
/// ever.
async fn a_task_with_17000_dependents_releases_them_all(t: TestDb) -> TestDb {
    const DEPENDENTS: i64 = 17_000;
    let registry = Registry::new();
    registry.register(Add);
    let queue = own_queue(&t, registry).await;
    let mut workflow = Workflow::new("wide").step("root", TaskSpec::new::<Add>(&(1, 2)));
    for i in 0..DEPENDENTS {
        workflow = workflow.step_after(format!("leaf{i}"), TaskSpec::new::<Sum>(&()), ["root"]);
    }
    let ids = queue.enqueue_workflow(workflow).await.unwrap();
    // Only the root has a handler here: the leaves are released, not run.
    let runner = Runner::start(queue.clone()).unwrap();
    wait_history(&t, 1).await;
    runner.shutdown(Duration::from_secs(5)).await;
    assert_eq!(history(&t.db).await[&ids["root"]].failed_at, None);
    let row =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            // The root's own row stays with its history row.
            "SELECT COUNT(*) FROM background_task_step WHERE released_at IS NOT NULL \
             AND name <> 'root'",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<i64>(0).unwrap(), DEPENDENTS);
    let due = task_row::Entity::find()
        .filter(task_row::Column::RunAt.lte(chrono::Utc::now().naive_utc()))
        .count(&t.db)
        .await
        .unwrap();
    assert_eq!(i64::try_from(due).unwrap(), DEPENDENTS, "every leaf is due");
    t
}
