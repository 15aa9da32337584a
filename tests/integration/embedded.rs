//! The queue inside a web app, as its handlers use it.
//!
//! On SQLite a process has one connection. A handler that opens its own
//! transaction and then calls `queue.enqueue` (not `enqueue_with(&txn,
//! ..)`) used to wait 60 s for that transaction, its own, while the
//! embedded runner stalled behind it. Now the enqueue is refused within
//! 100 ms with an error that says what to do; the handler rolls back and
//! the runner goes on. On PostgreSQL and MySQL the pool has other
//! connections, and the enqueue simply works.

use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, test, web};
use background_tasks::{Config, Error, Queue, Registry, Runner, builtin, completed_task};
use sea_orm::{ConnectionTrait, EntityTrait, TransactionTrait};

use crate::fixture::{Backend, TestDb, wait_for};

on_all_backends!(an_enqueue_beside_the_handlers_own_transaction_fails_fast_on_sqlite);

/// The mistake: a transaction of the handler's own, then `queue.enqueue`.
async fn place_order(queue: web::Data<Queue>) -> HttpResponse {
    let Ok(txn) = queue.db().begin().await else {
        return HttpResponse::ServiceUnavailable().finish();
    };
    // A write of the handler's own, as a real order would make.
    if let Err(err) = txn
        .execute_unprepared("UPDATE background_task SET priority = priority WHERE id = 0")
        .await
    {
        return HttpResponse::InternalServerError().body(err.to_string());
    }
    match queue.enqueue::<builtin::Noop>(&()).await {
        Ok(_) => {
            txn.commit().await.ok();
            HttpResponse::Accepted().finish()
        }
        Err(err @ Error::OwnTransaction) => {
            txn.rollback().await.ok();
            HttpResponse::Conflict().body(err.to_string())
        }
        Err(err) => HttpResponse::InternalServerError().body(err.to_string()),
    }
}

async fn an_enqueue_beside_the_handlers_own_transaction_fails_fast_on_sqlite(t: TestDb) -> TestDb {
    let registry = Registry::new();
    builtin::register(&registry);
    let queue = t.queue(
        registry,
        Config::builder()
            .sleep(Duration::from_millis(200))
            .build()
            .unwrap(),
    );
    let runner = Runner::start(queue.clone()).unwrap();
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(queue.clone()))
            .route("/orders", web::post().to(place_order)),
    )
    .await;
    // Each request of a server runs in a task of its own.
    let (status, body, took) = actix_web::rt::spawn(async move {
        let started = Instant::now();
        let response =
            test::call_service(&app, test::TestRequest::post().uri("/orders").to_request()).await;
        let took = started.elapsed();
        let status = response.status();
        let body = String::from_utf8_lossy(&test::read_body(response).await).into_owned();
        (status, body, took)
    })
    .await
    .unwrap();
    if t.backend == Backend::Sqlite {
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("enqueue_with(&txn"), "{body}");
        // Refused within the grace, not after the pool's 60 s: generous
        // bound for a loaded machine, far from 60 s.
        assert!(took < Duration::from_secs(5), "took {took:?}");
    } else {
        assert_eq!(status, 202, "{body}");
    }
    // The runner was not stalled for good: the task enqueued before, and
    // one enqueued now, both run.
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    let expected = if t.backend == Backend::Sqlite { 2 } else { 3 };
    wait_for(
        "the runner to run the tasks",
        Duration::from_secs(10),
        || async {
            completed_task::Entity::find()
                .all(&t.db)
                .await
                .unwrap()
                .len()
                == expected
        },
    )
    .await;
    // The right way works on every backend.
    let txn = queue.db().begin().await.unwrap();
    queue
        .enqueue_with::<builtin::Noop, _>(&txn, &())
        .await
        .unwrap();
    txn.commit().await.unwrap();
    // A commit, then at once an enqueue on the pool from the same task:
    // the connection just came back, and the enqueue is not refused.
    let txn = queue.db().begin().await.unwrap();
    txn.commit().await.unwrap();
    queue.enqueue::<builtin::Noop>(&()).await.unwrap();
    runner.shutdown(Duration::from_secs(5)).await;
    t
}
