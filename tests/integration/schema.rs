//! The schema is the seed's (seed-behaviour.md §1, checklist 1–4), on every
//! backend: 17 columns with their types, lengths and nullability, and the
//! single-column indexes under Django's names (all of them with
//! `--django-indexes`, the ones the queue reads through otherwise); plus the
//! claim index.

use background_tasks::db;
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

use crate::fixture::{Backend, TestDb};

on_all_backends!(
    both_tables_have_the_seeds_columns,
    our_tables_carry_the_lean_index_set,
    django_indexes_puts_back_every_index_of_djangos,
    every_lookup_of_the_queue_has_an_index,
    migrations_are_recorded_in_their_own_table_and_go_down_and_up,
    migrating_twice_is_a_no_op,
    sqlite_timestamps_are_stored_in_djangos_text,
);

/// (name, nullable, varchar length) of the 17 columns, in order.
const COLUMNS: [(&str, bool, Option<i64>); 17] = [
    ("id", false, None),
    ("task_name", false, Some(190)),
    ("task_params", false, None),
    ("task_hash", false, Some(40)),
    ("verbose_name", true, Some(255)),
    ("priority", false, None),
    ("run_at", false, None),
    ("repeat", false, None),
    ("repeat_until", true, None),
    ("queue", true, Some(190)),
    ("attempts", false, None),
    ("failed_at", true, None),
    ("last_error", false, None),
    ("locked_by", true, Some(64)),
    ("locked_at", true, None),
    ("creator_content_type_id", true, None),
    ("creator_object_id", true, None),
];

struct Column {
    name: String,
    data_type: String,
    nullable: bool,
    length: Option<i64>,
}

async fn columns(t: &TestDb, table: &str) -> Vec<Column> {
    let backend = t.db.get_database_backend();
    let sql = match t.backend {
        Backend::Sqlite => {
            format!("SELECT name, type, \"notnull\" FROM pragma_table_info('{table}') ORDER BY cid")
        }
        Backend::Postgres => format!(
            "SELECT column_name::text, data_type::text, is_nullable::text, character_maximum_length::bigint \
             FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
        ),
        Backend::MySql => format!(
            "SELECT CAST(column_name AS CHAR), CAST(column_type AS CHAR), CAST(is_nullable AS CHAR), \
             CAST(character_maximum_length AS SIGNED) FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name = '{table}' ORDER BY ordinal_position"
        ),
    };
    let rows =
        t.db.query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap();
    rows.iter()
        .map(|row| match t.backend {
            Backend::Sqlite => {
                let data_type: String = row.try_get_by_index(1).unwrap();
                let notnull: i32 = row.try_get_by_index(2).unwrap();
                let length = data_type
                    .strip_prefix("varchar(")
                    .and_then(|rest| rest.trim_end_matches(')').parse().ok());
                Column {
                    name: row.try_get_by_index(0).unwrap(),
                    data_type,
                    nullable: notnull == 0,
                    length,
                }
            }
            _ => {
                let nullable: String = row.try_get_by_index(2).unwrap();
                Column {
                    name: row.try_get_by_index(0).unwrap(),
                    data_type: row.try_get_by_index(1).unwrap(),
                    nullable: nullable == "YES",
                    length: row.try_get_by_index(3).unwrap(),
                }
            }
        })
        .collect()
}

fn expected_type(backend: Backend, column: &str) -> &'static str {
    match (backend, column) {
        (Backend::Postgres, "run_at" | "repeat_until" | "failed_at" | "locked_at") => {
            "timestamp with time zone"
        }
        (Backend::Postgres, "task_params" | "last_error") => "text",
        (Backend::Postgres, "repeat") => "bigint",
        (Backend::Postgres, "task_name" | "task_hash" | "verbose_name" | "queue" | "locked_by") => {
            "character varying"
        }
        (Backend::Postgres, _) => "integer",
        (Backend::MySql, "run_at" | "repeat_until" | "failed_at" | "locked_at") => "datetime(6)",
        (Backend::MySql, "task_params" | "last_error") => "longtext",
        (Backend::MySql, "repeat") => "bigint(20)",
        (Backend::MySql, "task_name" | "queue") => "varchar(190)",
        (Backend::MySql, "task_hash") => "varchar(40)",
        (Backend::MySql, "verbose_name") => "varchar(255)",
        (Backend::MySql, "locked_by") => "varchar(64)",
        // Django's PositiveIntegerField (migration 9 for older databases).
        (Backend::MySql, "creator_object_id") => "int(10) unsigned",
        (Backend::MySql, _) => "int(11)",
        (Backend::Sqlite, "run_at" | "repeat_until" | "failed_at" | "locked_at") => "datetime",
        (Backend::Sqlite, "task_params" | "last_error") => "text",
        (Backend::Sqlite, "repeat") => "bigint",
        (Backend::Sqlite, "task_name" | "queue") => "varchar(190)",
        (Backend::Sqlite, "task_hash") => "varchar(40)",
        (Backend::Sqlite, "verbose_name") => "varchar(255)",
        (Backend::Sqlite, "locked_by") => "varchar(64)",
        (Backend::Sqlite, "creator_object_id") => "integer unsigned",
        (Backend::Sqlite, _) => "integer",
    }
}

async fn both_tables_have_the_seeds_columns(t: TestDb) -> TestDb {
    for table in ["background_task", "background_task_completedtask"] {
        let mut actual = columns(&t, table).await;
        // This crate's own columns after the seed's 17: nullable, so
        // Django's inserts leave them empty.
        let expected_own: &[&str] = if table == "background_task" {
            &[
                "unique_key",
                "policy",
                "cancel_requested_at",
                "trace_context",
                "limit_key",
            ]
        } else {
            &["result", "cancelled_at", "task_id"]
        };
        let own = actual.split_off(COLUMNS.len());
        let own: Vec<(&str, bool)> = own.iter().map(|c| (c.name.as_str(), c.nullable)).collect();
        let expected: Vec<(&str, bool)> = expected_own.iter().map(|name| (*name, true)).collect();
        assert_eq!(own, expected, "{table}: this crate's own columns");
        let names: Vec<&str> = actual.iter().map(|c| c.name.as_str()).collect();
        let expected: Vec<&str> = COLUMNS.iter().map(|c| c.0).collect();
        assert_eq!(names, expected, "{table}: column names and order");
        for (column, (name, nullable, length)) in actual.iter().zip(COLUMNS) {
            assert_eq!(column.nullable, nullable, "{table}.{name} nullability");
            // MySQL reports LONGTEXT's own limit as a length.
            let length = match (t.backend, name) {
                (Backend::MySql, "task_params" | "last_error") => Some(4_294_967_295),
                _ => length,
            };
            assert_eq!(column.length, length, "{table}.{name} length");
            assert_eq!(
                column.data_type.to_lowercase(),
                expected_type(t.backend, name),
                "{table}.{name} type on {:?}",
                t.backend
            );
        }
    }
    t
}

/// (index name, columns, unique) of a table.
async fn indexes(t: &TestDb, table: &str) -> Vec<(String, String, bool)> {
    let backend = t.db.get_database_backend();
    let sql = match t.backend {
        Backend::Sqlite => format!(
            "SELECT il.name, group_concat(ii.name, ','), il.\"unique\" FROM pragma_index_list('{table}') il, \
             pragma_index_info(il.name) ii WHERE il.origin = 'c' GROUP BY il.name, il.\"unique\""
        ),
        Backend::Postgres => format!(
            "SELECT i.relname::text, string_agg(a.attname::text, ',' ORDER BY k.n), ix.indisunique \
             FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid \
             CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
             WHERE t.relname = '{table}' AND NOT ix.indisprimary GROUP BY i.relname, ix.indisunique"
        ),
        Backend::MySql => format!(
            "SELECT CAST(index_name AS CHAR), CAST(GROUP_CONCAT(column_name ORDER BY seq_in_index) AS CHAR), \
             MIN(non_unique) = 0 FROM information_schema.statistics WHERE table_schema = DATABASE() \
             AND table_name = '{table}' AND index_name <> 'PRIMARY' GROUP BY index_name"
        ),
    };
    let rows =
        t.db.query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap();
    rows.iter()
        .map(|row| {
            let unique = match t.backend {
                Backend::Postgres => row.try_get_by_index::<bool>(2).unwrap(),
                _ => row.try_get_by_index::<i64>(2).unwrap() != 0,
            };
            (
                row.try_get_by_index(0).unwrap(),
                row.try_get_by_index(1).unwrap(),
                unique,
            )
        })
        .collect()
}

/// Django's single-column indexes: (table, column, digest of its name).
const SEED_INDEXES: [(&str, &str, &str); 20] = [
    ("background_task", "task_name", "4562d56a"),
    ("background_task", "task_hash", "d8f233bd"),
    ("background_task", "priority", "88bdbce9"),
    ("background_task", "run_at", "7baca3aa"),
    ("background_task", "queue", "1d5f3a40"),
    ("background_task", "attempts", "a9ade23d"),
    ("background_task", "failed_at", "b81bba14"),
    ("background_task", "locked_by", "db7779e3"),
    ("background_task", "locked_at", "0fb0f225"),
    ("background_task", "creator_content_type_id", "61cc9af3"),
    ("background_task_completedtask", "task_name", "388dabc2"),
    ("background_task_completedtask", "task_hash", "91187576"),
    ("background_task_completedtask", "priority", "9080692e"),
    ("background_task_completedtask", "run_at", "77c80f34"),
    ("background_task_completedtask", "queue", "61fb0415"),
    ("background_task_completedtask", "attempts", "772a6783"),
    ("background_task_completedtask", "failed_at", "3de56618"),
    ("background_task_completedtask", "locked_by", "edc8a213"),
    ("background_task_completedtask", "locked_at", "29c62708"),
    (
        "background_task_completedtask",
        "creator_content_type_id",
        "21d6a741",
    ),
];

/// Tables this crate created, no Django app: Django's indexes are cut down
/// to the ones the queue reads through (migration 12), plus the claim index,
/// the unique key's, and on PostgreSQL and SQLite partial indexes over the
/// locked and the failed rows.
async fn our_tables_carry_the_lean_index_set(t: TestDb) -> TestDb {
    let partial = t.backend != Backend::MySql;
    let expected: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "background_task",
            [
                ("background_task_task_hash_d8f233bd", "task_hash"),
                ("background_task_claim_idx", ""),
                ("background_task_unique_key_uniq", "unique_key"),
            ]
            .into_iter()
            .chain(if partial {
                Some(("background_task_locked_idx", "locked_by,locked_at"))
            } else {
                Some(("background_task_locked_by_db7779e3", "locked_by"))
            })
            .chain(partial.then_some(("background_task_failed_idx", "failed_at")))
            // Migration 15: claims of a queue with a key policy walk it key
            // by key (on MySQL, which has no partial index, the claim
            // index's columns follow).
            .chain(Some(if partial {
                (
                    "background_task_key_idx",
                    "queue,limit_key,priority,run_at,id",
                )
            } else {
                (
                    "background_task_key_idx",
                    "queue,limit_key,locked_by,failed_at,priority,run_at,id",
                )
            }))
            .collect(),
        ),
        (
            "background_task_completedtask",
            [
                (
                    "background_task_completedtask_task_hash_91187576",
                    "task_hash",
                ),
                ("background_task_completedtask_run_at_77c80f34", "run_at"),
                // Migration 13: a task after one that finished looks up
                // how it ended by the id it had.
                ("background_task_completedtask_task_id_idx", "task_id"),
            ]
            .into_iter()
            .chain(if partial {
                Some(("background_task_completedtask_failed_idx", "failed_at"))
            } else {
                Some((
                    "background_task_completedtask_failed_at_3de56618",
                    "failed_at",
                ))
            })
            .collect(),
        ),
        (
            // Migration 16: the steps of a workflow, and workflows by name.
            "background_task_step",
            vec![("background_task_step_workflow_idx", "workflow,task_id")],
        ),
    ];
    for (table, wanted) in &expected {
        let mut actual = indexes(&t, table).await;
        actual.sort();
        let mut wanted: Vec<(String, String)> = wanted
            .iter()
            .map(|(name, columns)| (name.to_string(), columns.to_string()))
            .collect();
        wanted.sort();
        let names: Vec<(String, String)> = actual
            .iter()
            .map(|(name, columns, _)| {
                let columns = if name == "background_task_claim_idx" {
                    String::new()
                } else {
                    columns.clone()
                };
                (name.clone(), columns)
            })
            .collect();
        assert_eq!(names, wanted, "{table}: the lean index set");
    }
    claim_index_walks_the_claim_order(&t).await;
    t
}

/// `bgtasks migrate --django-indexes` (and a Django app's own migrations)
/// give every one of Django's single-column indexes, under Django's names;
/// a second run creates nothing; rolling migration 12 back keeps them and
/// drops the partial indexes.
async fn django_indexes_puts_back_every_index_of_djangos(t: TestDb) -> TestDb {
    let created = db::migrate_with_django_indexes(&t.db).await.unwrap();
    let lean_kept = if t.backend == Backend::MySql { 5 } else { 3 };
    assert_eq!(created.len(), 20 - lean_kept, "created {created:?}");
    assert_eq!(
        db::migrate_with_django_indexes(&t.db).await.unwrap(),
        Vec::<String>::new(),
        "a second run creates nothing"
    );
    assert_djangos_indexes(&t).await;
    // Down to before migration 12, the lean set's.
    let after_12 = u32::try_from(Migrator::migrations().len() - 11).unwrap();
    Migrator::down(&t.db, Some(after_12)).await.unwrap();
    assert_djangos_indexes(&t).await;
    for table in ["background_task", "background_task_completedtask"] {
        let partial: Vec<_> = indexes(&t, table)
            .await
            .into_iter()
            .filter(|i| i.0.ends_with("_locked_idx") || i.0.ends_with("_failed_idx"))
            .collect();
        assert!(partial.is_empty(), "{table}: down drops {partial:?}");
    }
    db::migrate(&t.db).await.unwrap();
    t
}

async fn assert_djangos_indexes(t: &TestDb) {
    for table in ["background_task", "background_task_completedtask"] {
        let actual = indexes(t, table).await;
        for (_, column, digest) in SEED_INDEXES.iter().filter(|s| s.0 == table) {
            let name = format!("{table}_{column}_{digest}");
            let found = actual.iter().find(|i| i.0 == name);
            assert_eq!(
                found.map(|i| (i.1.as_str(), i.2)),
                Some((*column, false)),
                "{table}: index {name}, non-unique, on {column}"
            );
        }
        // The seed's columns have no unique index (task_hash included); the
        // one unique index is over this crate's nullable `unique_key`, set
        // only for unique tasks.
        let unique: Vec<&str> = actual
            .iter()
            .filter(|i| i.2)
            .map(|i| i.1.as_str())
            .collect();
        let allowed: &[&str] = if table == "background_task" {
            &["unique_key"]
        } else {
            &[]
        };
        assert_eq!(unique, allowed, "{table}: unique indexes {actual:?}");
    }
}

async fn claim_index_walks_the_claim_order(t: &TestDb) {
    let claim = indexes(t, "background_task")
        .await
        .into_iter()
        .find(|i| i.0 == "background_task_claim_idx")
        .unwrap();
    let expected = match t.backend {
        Backend::MySql => "locked_by,failed_at,priority,run_at,id",
        _ => "priority,run_at,id",
    };
    assert_eq!(claim.1, expected);
}

/// Every lookup the runner, the dashboard and the command line make goes
/// through an index of the lean set: the plan never reads the whole table.
/// PostgreSQL plans with sequential scans priced out (so an index that can
/// serve is used), SQLite's plan names the index, and MySQL lists a key it
/// can use.
async fn every_lookup_of_the_queue_has_an_index(t: TestDb) -> TestDb {
    let at = "'2026-01-01 00:00:00'";
    let lookups = [
        (
            "claim",
            format!(
                "SELECT id FROM background_task WHERE locked_by IS NULL AND failed_at IS NULL \
                 AND run_at <= {at} ORDER BY priority DESC, run_at, id LIMIT 10"
            ),
        ),
        (
            "heartbeat, outcome fence",
            "SELECT id FROM background_task WHERE locked_by = 'host:1:abc'".to_owned(),
        ),
        (
            "lock expiry",
            format!(
                "SELECT id FROM background_task WHERE locked_by IS NOT NULL AND \
                 ((locked_by LIKE '%:%:%' AND locked_at < {at}) OR \
                 (locked_by NOT LIKE '%:%:%' AND locked_at < {at}))"
            ),
        ),
        (
            "check-existing",
            "SELECT id FROM background_task WHERE task_hash = 'h' AND locked_at IS NULL".to_owned(),
        ),
        (
            "running count of a limited queue",
            "SELECT COUNT(*) FROM background_task WHERE locked_by IS NOT NULL AND queue = 'q'"
                .to_owned(),
        ),
        (
            "a keyed claim: the next key with due tasks",
            format!(
                "SELECT limit_key FROM background_task WHERE locked_by IS NULL AND failed_at IS \
                 NULL AND run_at <= {at} AND queue = 'q' AND limit_key > 'k' ORDER BY limit_key \
                 LIMIT 1"
            ),
        ),
        (
            "a keyed claim: one key's due tasks",
            format!(
                "SELECT id FROM background_task WHERE locked_by IS NULL AND failed_at IS NULL \
                 AND run_at <= {at} AND queue = 'q' AND limit_key = 'k' ORDER BY priority \
                 DESC, run_at, id LIMIT 10"
            ),
        ),
        (
            "a keyed claim: the due tasks without a key",
            format!(
                "SELECT id FROM background_task WHERE locked_by IS NULL AND failed_at IS NULL \
                 AND run_at <= {at} AND queue = 'q' AND limit_key IS NULL LIMIT 1"
            ),
        ),
        (
            "steps of a workflow",
            "SELECT task_id FROM background_task_step WHERE workflow = 'w' AND task_id > 0 \
             ORDER BY task_id LIMIT 100"
                .to_owned(),
        ),
        (
            "set-aside tasks",
            "SELECT id FROM background_task WHERE failed_at IS NOT NULL AND locked_by IS NULL"
                .to_owned(),
        ),
        (
            "history of a task",
            "SELECT id FROM background_task_completedtask WHERE task_hash = 'h' \
             AND task_name = 'n' ORDER BY run_at DESC, id DESC"
                .to_owned(),
        ),
        (
            "recent history",
            format!("SELECT id FROM background_task_completedtask WHERE run_at >= {at}"),
        ),
        (
            "retention of failures",
            format!(
                "SELECT id FROM background_task_completedtask WHERE failed_at IS NOT NULL \
                 AND failed_at < {at} ORDER BY failed_at LIMIT 100"
            ),
        ),
        (
            "retention of completions",
            format!(
                "SELECT id FROM background_task_completedtask WHERE (NOT failed_at IS NOT NULL) \
                 AND run_at < {at} ORDER BY run_at LIMIT 100"
            ),
        ),
    ];
    let backend = t.db.get_database_backend();
    let raw = |sql: String| Statement::from_string(backend, sql);
    // One connection for the setting and the plans.
    let txn = t.db.begin().await.unwrap();
    if backend == DbBackend::Postgres {
        txn.execute_raw(raw("SET LOCAL enable_seqscan = off".into()))
            .await
            .unwrap();
    }
    for (what, sql) in lookups {
        let explain = match backend {
            DbBackend::Sqlite => format!("EXPLAIN QUERY PLAN {sql}"),
            _ => format!("EXPLAIN {sql}"),
        };
        let rows = txn.query_all_raw(raw(explain)).await.unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|row| match backend {
                // (id, parent, notused, detail)
                DbBackend::Sqlite => row.try_get_by_index::<String>(3).unwrap(),
                DbBackend::Postgres => row.try_get_by_index::<String>(0).unwrap(),
                // possible_keys, the 6th column
                _ => format!(
                    "possible_keys: {}",
                    row.try_get::<Option<String>>("", "possible_keys")
                        .unwrap()
                        .unwrap_or_else(|| "NULL".into())
                ),
            })
            .collect();
        let whole_table = plan.iter().any(|line| match backend {
            DbBackend::Sqlite => line.starts_with("SCAN ") && !line.contains("INDEX"),
            DbBackend::Postgres => line.contains("Seq Scan"),
            _ => line == "possible_keys: NULL",
        });
        assert!(
            !whole_table,
            "{what}: reads the whole table: {plan:#?}\n{sql}"
        );
    }
    txn.rollback().await.unwrap();
    t
}

async fn migrations_are_recorded_in_their_own_table_and_go_down_and_up(t: TestDb) -> TestDb {
    let backend = t.db.get_database_backend();
    let count = |sql: &str| Statement::from_string(backend, sql.to_owned());
    let row =
        t.db.query_one_raw(count(
            "SELECT COUNT(*) AS n FROM background_tasks_migrations",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap(),
        i64::try_from(Migrator::migrations().len()).unwrap(),
        "every migration ran"
    );
    assert!(
        Migrator::get_pending_migrations(&t.db)
            .await
            .unwrap()
            .is_empty()
    );

    Migrator::down(&t.db, None).await.unwrap();
    let exists = match backend {
        DbBackend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE name = 'background_task'",
        DbBackend::Postgres => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'background_task'"
        }
        _ => {
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'background_task'"
        }
    };
    let row = t.db.query_one_raw(count(exists)).await.unwrap().unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap(),
        0,
        "down drops the tables"
    );

    db::migrate(&t.db).await.unwrap();
    let row = t.db.query_one_raw(count(exists)).await.unwrap().unwrap();
    assert_eq!(
        row.try_get_by_index::<i64>(0).unwrap(),
        1,
        "up creates them again"
    );
    t
}

// Several processes open the same database at once (a web app and its
// runners): migrations are serialized and idempotent.
async fn migrating_twice_is_a_no_op(t: TestDb) -> TestDb {
    let (a, b) = futures_join(db::migrate(&t.db), db::migrate(&t.db)).await;
    a.unwrap();
    b.unwrap();
    assert!(
        Migrator::get_pending_migrations(&t.db)
            .await
            .unwrap()
            .is_empty()
    );
    t
}

async fn futures_join<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> (A::Output, B::Output) {
    tokio::join!(a, b)
}

/// Raw text of `column` of row `id` in `table` (SQLite).
async fn raw_text(t: &TestDb, table: &str, column: &str, id: i32) -> Option<String> {
    let row =
        t.db.query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("SELECT {column} AS v FROM {table} WHERE id = {id}"),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<Option<String>>("", "v").unwrap()
}

fn django_text(text: &str) -> bool {
    // YYYY-MM-DD HH:MM:SS, then .ffffff or nothing: what Django writes.
    let bytes = text.as_bytes();
    (text.len() == 19 || (text.len() == 26 && bytes[19] == b'.'))
        && bytes[10] == b' '
        && !text.contains('+')
}

// SQLite keeps timestamps as text and compares text: what this crate
// writes, what Django writes and what a plain SeaORM statement writes must
// all end up in Django's format, or a same-day row would sort wrong.
async fn sqlite_timestamps_are_stored_in_djangos_text(t: TestDb) -> TestDb {
    use background_tasks::{Config, Registry, completed_task, task_row};
    use chrono::{TimeDelta, Utc};
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, EntityTrait, IntoActiveModel};
    let queue = t.queue(Registry::new(), Config::default());
    let task = queue
        .enqueue_call("stamp", &(1,), &())
        .schedule(60)
        .repeat(60)
        .repeat_until(Utc::now() + TimeDelta::days(1))
        .await
        .unwrap()
        .into_task()
        .unwrap();
    if t.backend != Backend::Sqlite {
        // Typed timestamps: nothing to normalize; the round trip holds.
        let read = task_row::Entity::find_by_id(task.id)
            .one(&t.db)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.run_at, task.run_at);
        return t;
    }
    for column in ["run_at", "repeat_until"] {
        let text = raw_text(&t, "background_task", column, task.id)
            .await
            .unwrap();
        assert!(django_text(&text), "{column} = {text:?}");
    }
    // A plain SeaORM write puts RFC 3339 text; the trigger rewrites it.
    let mut row = task.clone().into_active_model();
    // Whole microseconds: the precision Django and the trigger keep.
    let locked_at = chrono::DateTime::from_timestamp_micros(
        (Utc::now() - TimeDelta::hours(2)).timestamp_micros(),
    )
    .unwrap();
    row.locked_at = Set(Some(locked_at));
    row.locked_by = Set(Some("12345".into()));
    row.update(&t.db).await.unwrap();
    let text = raw_text(&t, "background_task", "locked_at", task.id)
        .await
        .unwrap();
    assert!(django_text(&text), "locked_at = {text:?}");
    let read = task_row::Entity::find_by_id(task.id)
        .one(&t.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.locked_at, Some(locked_at), "the instant is kept");
    let history = completed_task::ActiveModel {
        task_name: Set("stamp".into()),
        task_params: Set("[[1], {}]".into()),
        task_hash: Set("h".into()),
        priority: Set(0),
        run_at: Set(Utc::now()),
        repeat: Set(0),
        attempts: Set(1),
        failed_at: Set(Some(Utc::now())),
        last_error: Set(String::new()),
        ..Default::default()
    }
    .insert(&t.db)
    .await
    .unwrap();
    for column in ["run_at", "failed_at"] {
        let text = raw_text(&t, "background_task_completedtask", column, history.id)
            .await
            .unwrap();
        assert!(django_text(&text), "{column} = {text:?}");
    }
    t
}
