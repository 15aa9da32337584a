//! Creates django-background-tasks' two tables, as its `0001_initial`
//! migration (release 1.2.8) does: same names, 17 columns, types, lengths,
//! nullability, and the same single-column indexes under Django's own index
//! names, so that Django's admin and `process_tasks` can share the database.
//!
//! Differences from Django's DDL, on purpose:
//! - `creator_content_type_id` has no foreign key to `django_content_type`:
//!   that table exists only in a Django project. It is still indexed.
//! - `creator_object_id` keeps a `>= 0` check on every backend (Django
//!   writes it on PostgreSQL and SQLite; on MySQL the column is `integer
//!   UNSIGNED` either way).
//! - No column gets a database default, exactly like Django: every insert
//!   (ours and Django's) supplies every column.
//!
//! **Attaching to a Django database.** When a table already exists (Django's
//! own `background_task` migrations created it, with its foreign keys to
//! `django_content_type`), it is used as it is: this migration creates
//! neither it nor its indexes, which Django created under the same names.
//! Rolling back then leaves the tables Django owns (`django_migrations`
//! records app `background_task`): dropping them is Django's decision.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000001_create_seed_tables"
    }
}

/// Single-column indexes of `background_task`, named as Django names them
/// (`<table>_<column>_<first 8 hex of md5(table + column)>`).
pub const TASK_INDEXES: [(&str, &str); 10] = [
    ("task_name", "background_task_task_name_4562d56a"),
    ("task_hash", "background_task_task_hash_d8f233bd"),
    ("priority", "background_task_priority_88bdbce9"),
    ("run_at", "background_task_run_at_7baca3aa"),
    ("queue", "background_task_queue_1d5f3a40"),
    ("attempts", "background_task_attempts_a9ade23d"),
    ("failed_at", "background_task_failed_at_b81bba14"),
    ("locked_by", "background_task_locked_by_db7779e3"),
    ("locked_at", "background_task_locked_at_0fb0f225"),
    (
        "creator_content_type_id",
        "background_task_creator_content_type_id_61cc9af3",
    ),
];

/// The same set on `background_task_completedtask`.
pub const COMPLETED_INDEXES: [(&str, &str); 10] = [
    (
        "task_name",
        "background_task_completedtask_task_name_388dabc2",
    ),
    (
        "task_hash",
        "background_task_completedtask_task_hash_91187576",
    ),
    (
        "priority",
        "background_task_completedtask_priority_9080692e",
    ),
    ("run_at", "background_task_completedtask_run_at_77c80f34"),
    ("queue", "background_task_completedtask_queue_61fb0415"),
    (
        "attempts",
        "background_task_completedtask_attempts_772a6783",
    ),
    (
        "failed_at",
        "background_task_completedtask_failed_at_3de56618",
    ),
    (
        "locked_by",
        "background_task_completedtask_locked_by_edc8a213",
    ),
    (
        "locked_at",
        "background_task_completedtask_locked_at_29c62708",
    ),
    (
        "creator_content_type_id",
        "background_task_completedtask_creator_content_type_id_21d6a741",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        for (table, indexes) in [
            ("background_task", &TASK_INDEXES),
            ("background_task_completedtask", &COMPLETED_INDEXES),
        ] {
            if manager.has_table(table).await? {
                // Created by Django's migrations (or an earlier install):
                // attach to it as it is.
                continue;
            }
            manager.create_table(seed_table(table, backend)).await?;
            for (column, name) in indexes {
                manager
                    .create_index(django_index(table, column, name))
                    .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if django_owns_tables(manager).await? {
            return Ok(());
        }
        for table in ["background_task_completedtask", "background_task"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Django's single-column index `name` on `table` (`column`).
pub(crate) fn django_index(table: &str, column: &str, name: &str) -> IndexCreateStatement {
    Index::create()
        .name(name)
        .table(Alias::new(table))
        .col(Alias::new(column))
        .to_owned()
}

/// Whether Django's migrations created the tables: `django_migrations`
/// records app `background_task`.
pub(crate) async fn django_owns_tables(manager: &SchemaManager<'_>) -> Result<bool, DbErr> {
    if !manager.has_table("django_migrations").await? {
        return Ok(false);
    }
    let row = manager
        .get_connection()
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
            manager.get_database_backend(),
            "SELECT COUNT(*) AS n FROM django_migrations WHERE app = 'background_task'",
        ))
        .await?;
    Ok(row
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .is_some_and(|n| n > 0))
}

/// Column types as Django's schema editor writes them for each backend.
struct Types {
    datetime: &'static str,
    text: &'static str,
    positive_integer: &'static str,
}

fn types(backend: DbBackend) -> Types {
    match backend {
        DbBackend::Postgres => Types {
            datetime: "timestamp with time zone",
            text: "text",
            positive_integer: "integer",
        },
        // MySQL's TIMESTAMP stops in 2038 and converts time zones; Django
        // uses DATETIME(6) (microseconds, stored as written: UTC).
        // `integer UNSIGNED`, as Django writes it (databases created before
        // migration 9 had a signed integer; that migration converts them).
        DbBackend::MySql => Types {
            datetime: "datetime(6)",
            text: "longtext",
            positive_integer: "integer unsigned",
        },
        _ => Types {
            datetime: "datetime",
            text: "text",
            positive_integer: "integer unsigned",
        },
    }
}

/// The 17 columns shared by both tables (django-background-tasks 1.2.8,
/// `background_task/migrations/0001_initial.py`).
fn seed_table(table: &str, backend: DbBackend) -> TableCreateStatement {
    let t = types(backend);
    let datetime = |name: &str| {
        ColumnDef::new(Alias::new(name))
            .custom(Alias::new(t.datetime))
            .to_owned()
    };
    let text = |name: &str| {
        ColumnDef::new(Alias::new(name))
            .custom(Alias::new(t.text))
            .not_null()
            .to_owned()
    };
    Table::create()
        .table(Alias::new(table))
        .col(
            ColumnDef::new(Alias::new("id"))
                .integer()
                .not_null()
                .auto_increment()
                .primary_key(),
        )
        .col(
            ColumnDef::new(Alias::new("task_name"))
                .string_len(190)
                .not_null(),
        )
        .col(text("task_params"))
        .col(
            ColumnDef::new(Alias::new("task_hash"))
                .string_len(40)
                .not_null(),
        )
        .col(
            ColumnDef::new(Alias::new("verbose_name"))
                .string_len(255)
                .null(),
        )
        .col(ColumnDef::new(Alias::new("priority")).integer().not_null())
        .col(datetime("run_at").not_null())
        .col(
            ColumnDef::new(Alias::new("repeat"))
                .custom(Alias::new("bigint"))
                .not_null(),
        )
        .col(datetime("repeat_until").null())
        .col(ColumnDef::new(Alias::new("queue")).string_len(190).null())
        .col(ColumnDef::new(Alias::new("attempts")).integer().not_null())
        .col(datetime("failed_at").null())
        .col(text("last_error"))
        .col(
            ColumnDef::new(Alias::new("locked_by"))
                .string_len(64)
                .null(),
        )
        .col(datetime("locked_at").null())
        .col(
            ColumnDef::new(Alias::new("creator_content_type_id"))
                .integer()
                .null(),
        )
        .col(
            ColumnDef::new(Alias::new("creator_object_id"))
                .custom(Alias::new(t.positive_integer))
                .null()
                .check(Expr::col(Alias::new("creator_object_id")).gte(0)),
        )
        .to_owned()
}
