//! The seed's managers (checklist 49): tasks by creator; history by
//! creator, failed(within), succeeded(within). The runner-driven version of
//! QuerySetManagerTestCase lives with the runner tests; here the history
//! rows are written directly.

use background_tasks::{
    CompletedTaskQuery, Config, Creator, Registry, TaskQuery, completed_task, task_row,
};
use chrono::{TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::NotSet, EntityTrait, IntoActiveModel, PaginatorTrait,
};

use crate::fixture::TestDb;
use crate::tasks::Add;

on_all_backends!(tasks_by_creator, completed_tasks_by_state_time_and_creator);

// QuerySetManagerTestCase.test_task_manager (enqueue part)
async fn tasks_by_creator(t: TestDb) -> TestDb {
    let queue = t.queue(Registry::new(), Config::default());
    let user1 = Creator::new(3, 1);
    let user2 = Creator::new(3, 2);
    for i in 0..4 {
        let call = queue.enqueue::<Add>(&(i, i));
        let call = if i < 2 { call.creator(user1) } else { call };
        call.await.unwrap();
    }
    let count = |c| task_row::Entity::find().created_by(c).count(&t.db);
    assert_eq!(count(user1).await.unwrap(), 2);
    assert_eq!(count(user2).await.unwrap(), 0);
    assert_eq!(
        count(Creator::new(4, 1)).await.unwrap(),
        0,
        "same id, other type"
    );
    t
}

fn history_row(
    creator: Option<Creator>,
    failed: bool,
    age: TimeDelta,
) -> completed_task::ActiveModel {
    let when = Utc::now() - age;
    let mut row = completed_task::Model {
        id: 0,
        task_name: "add".into(),
        task_params: "[[1, 1], {}]".into(),
        task_hash: "h".into(),
        verbose_name: None,
        priority: 0,
        run_at: when,
        repeat: 0,
        repeat_until: None,
        queue: None,
        attempts: 1,
        failed_at: failed.then_some(when),
        last_error: if failed { "boom".into() } else { String::new() },
        locked_by: Some("1".into()),
        locked_at: Some(when),
        creator_content_type_id: creator.map(|c| c.content_type_id),
        creator_object_id: creator.map(|c| c.object_id),
        result: None,
        cancelled_at: None,
        task_id: None,
    }
    .into_active_model();
    row.id = NotSet;
    row
}

// QuerySetManagerTestCase.test_completed_task_manager
async fn completed_tasks_by_state_time_and_creator(t: TestDb) -> TestDb {
    let user1 = Creator::new(3, 1);
    let find = completed_task::Entity::find;
    assert_eq!(find().failed(None).count(&t.db).await.unwrap(), 0);
    assert_eq!(find().succeeded(None).count(&t.db).await.unwrap(), 0);
    let recent = TimeDelta::seconds(5);
    for row in [
        history_row(Some(user1), false, recent),
        history_row(None, false, recent),
        history_row(Some(user1), true, recent),
        history_row(None, true, recent),
        history_row(None, true, TimeDelta::hours(3)),
        history_row(None, false, TimeDelta::hours(3)),
    ] {
        row.insert(&t.db).await.unwrap();
    }
    let hour = Some(TimeDelta::hours(1));
    assert_eq!(find().created_by(user1).count(&t.db).await.unwrap(), 2);
    assert_eq!(find().failed(None).count(&t.db).await.unwrap(), 3);
    assert_eq!(
        find()
            .created_by(user1)
            .failed(None)
            .count(&t.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(find().failed(hour).count(&t.db).await.unwrap(), 2);
    assert_eq!(find().succeeded(None).count(&t.db).await.unwrap(), 3);
    assert_eq!(
        find()
            .created_by(user1)
            .succeeded(None)
            .count(&t.db)
            .await
            .unwrap(),
        1
    );
    assert_eq!(find().succeeded(hour).count(&t.db).await.unwrap(), 2);
    let one = find()
        .created_by(user1)
        .failed(None)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert!(one.has_error());
    assert!(one.to_string().starts_with("add - "));
    t
}
