//! The seed's admin, as functions (checklist 51, 52): search over names and
//! params, bulk priority +1/-1 and delete over any number of rows, lock
//! liveness, and the due tasks no runner here can run.

use background_tasks::{Config, Registry, TaskSpec, admin, completed_task, task_row};
use chrono::Utc;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel, PaginatorTrait};

use crate::fixture::TestDb;
use crate::tasks::{Add, Fail, Record};

on_all_backends!(search_priority_and_delete, unhandled_due_and_lock_liveness);

async fn search_priority_and_delete(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    queue
        .enqueue_call("mail.send", &("ada@example.com",), &())
        .await
        .unwrap();
    queue
        .enqueue_call("mail.send", &("50%_off",), &())
        .await
        .unwrap();
    let specs: Vec<TaskSpec> = (0..2_500).map(|i| TaskSpec::new::<Add>(&(i, 0))).collect();
    queue.enqueue_many(specs).await.unwrap();

    let found = admin::search_tasks(&t.db, "ada@", 10).await.unwrap();
    assert_eq!(found.len(), 1, "search over params");
    assert_eq!(
        admin::search_tasks(&t.db, "mail.", 10).await.unwrap().len(),
        2,
        "over names"
    );
    let literal = admin::search_tasks(&t.db, "50%_", 10).await.unwrap();
    assert_eq!(literal.len(), 1, "% and _ are matched literally");
    assert_eq!(admin::search_tasks(&t.db, "%", 10).await.unwrap().len(), 1);

    let ids: Vec<i32> = task_row::Entity::find()
        .all(&t.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(admin::increase_priority(&t.db, &ids).await.unwrap(), 2_502);
    assert_eq!(admin::increase_priority(&t.db, &ids[..1]).await.unwrap(), 1);
    assert_eq!(admin::decrease_priority(&t.db, &ids[..2]).await.unwrap(), 2);
    let first = task_row::Entity::find_by_id(ids[0])
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    let second = task_row::Entity::find_by_id(ids[1])
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    let third = task_row::Entity::find_by_id(ids[2])
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.priority, second.priority, third.priority), (1, 0, 1));

    // Manual edit of one task (the admin's change form) is a plain update.
    let mut edited = third.into_active_model();
    edited.priority = Set(42);
    edited.update(&t.db).await.unwrap();

    assert_eq!(
        admin::delete_tasks(&t.db, &ids).await.unwrap(),
        2_502,
        "no 'too many SQL variables'"
    );
    assert_eq!(task_row::Entity::find().count(&t.db).await.unwrap(), 0);
    t
}

async fn unhandled_due_and_lock_liveness(t: TestDb) -> TestDb {
    let registry = Registry::new();
    registry.register(Record::default()).register(Fail);
    let queue = t.queue(registry, Config::default());
    queue.enqueue_call("django.only", &(1,), &()).await.unwrap();
    queue.enqueue_call("django.only", &(2,), &()).await.unwrap();
    queue
        .enqueue_call("later.only", &(), &())
        .schedule(3600)
        .await
        .unwrap();
    let failing = queue
        .enqueue::<Fail>(&(1,))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    let unhandled = admin::unhandled_due(&t.db, queue.registry(), Utc::now())
        .await
        .unwrap();
    assert_eq!(unhandled, vec![("django.only".to_owned(), 2)]);

    assert_eq!(
        admin::locked_by_pid_running(failing.locked_by.as_deref()),
        None,
        "not locked"
    );
    assert!(queue.run_next_task().await);
    let history = completed_task::Entity::find().all(&t.db).await.unwrap();
    assert!(history.is_empty());
    let row = task_row::Entity::find_by_id(failing.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        admin::locked_by_pid_running(row.locked_by.as_deref()),
        None,
        "unlocked after the retry"
    );
    assert_eq!(
        admin::locked_by_pid_running(Some(queue.runner_id())),
        Some(true),
        "this process is alive"
    );
    t
}
