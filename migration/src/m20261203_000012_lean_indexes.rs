//! Keeps only the indexes the queue reads through, when no Django app
//! shares the tables.
//!
//! Django's `0001_initial` puts ten single-column indexes on
//! `background_task` and ten on `background_task_completedtask`, for its
//! admin's filters. The runner, the dashboard and the command line read
//! through a few of them only, and every other index costs a write per row
//! on each enqueue, each claim (on PostgreSQL an update of an indexed column
//! writes an entry into every index) and each history insert. So when this
//! crate created the tables, this migration drops the ones nothing here
//! reads, and on PostgreSQL and SQLite replaces two by partial indexes over
//! the few rows they serve. What stays, and the queries behind it:
//!
//! | index | serves |
//! |---|---|
//! | `background_task_claim_idx` (migration 2) | the claim; the pending and scheduled lists; on MySQL also every `locked_by` and `failed_at` lookup below, as a prefix |
//! | `task_hash` (Django's) | check-existing, remove-existing, reschedule-existing; `bgtasks show` by hash |
//! | `background_task_locked_idx` (`locked_by, locked_at`, locked rows only) | heartbeats and outcome fences (`locked_by = ?`), lock expiry (`locked_at < ?`), running counts for queue limits, the running list |
//! | `background_task_failed_idx` (`failed_at`, failed rows only) | the failed and set-aside lists, `bgtasks doctor` |
//! | history `task_hash`, `run_at` (Django's) | `bgtasks show`, the completed list, retention by age, per-runner throughput |
//! | history `background_task_completedtask_failed_idx` (failed rows only; MySQL keeps Django's `failed_at`) | the failed history list, retention of failures |
//!
//! The partial indexes exist on PostgreSQL and SQLite only (MySQL has
//! none); MySQL keeps Django's `locked_by` index instead (see
//! [`lean_task_columns`]) and answers the other lookups from the claim
//! index, which starts with `locked_by, failed_at`.
//!
//! **Django.** When Django's migrations created the tables
//! (`django_migrations` records app `background_task`), this migration
//! changes nothing: Django's admin and `process_tasks` filter on the other
//! columns. Before a Django app attaches to tables this crate created, run
//! `bgtasks migrate --django-indexes` ([`django_indexes`]), which puts back
//! every index of Django's under Django's own names. Rolling this migration
//! back does the same and drops the partial indexes.

use sea_orm_migration::IntoSchemaManagerConnection;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

use crate::m20261127_000001_create_seed_tables::{
    COMPLETED_INDEXES, TASK_INDEXES, django_index, django_owns_tables,
};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000012_lean_indexes"
    }
}

const TASKS: &str = "background_task";
const HISTORY: &str = "background_task_completedtask";

/// Partial index over the locked rows of `background_task` (PostgreSQL, SQLite).
pub const LOCKED_INDEX: &str = "background_task_locked_idx";
/// Partial index over the failed rows of `background_task` (PostgreSQL, SQLite).
pub const FAILED_INDEX: &str = "background_task_failed_idx";
/// Partial index over the failed rows of the history (PostgreSQL, SQLite).
pub const HISTORY_FAILED_INDEX: &str = "background_task_completedtask_failed_idx";

/// Columns whose Django index the lean set keeps on `background_task`, by
/// backend. MySQL keeps `locked_by`: the statements that write a runner's
/// own rows (`UPDATE`/`DELETE ... WHERE locked_by = ? AND id IN (...)`,
/// which take no index hint) then always find a narrow index, and never
/// scan and lock rows that other runners' `SKIP LOCKED` claims would skip.
pub fn lean_task_columns(backend: DbBackend) -> &'static [&'static str] {
    match backend {
        DbBackend::MySql => &["task_hash", "locked_by"],
        _ => &["task_hash"],
    }
}

/// Columns whose Django index the lean set keeps on the history, by backend
/// (MySQL keeps `failed_at`, having no partial index to replace it with).
pub fn lean_history_columns(backend: DbBackend) -> &'static [&'static str] {
    match backend {
        DbBackend::MySql => &["task_hash", "run_at", "failed_at"],
        _ => &["task_hash", "run_at"],
    }
}

/// `(table, name, definition)` of the partial indexes of the lean set, on
/// `backend` (none on MySQL).
pub fn partial_indexes(
    backend: DbBackend,
) -> &'static [(&'static str, &'static str, &'static str)] {
    match backend {
        DbBackend::MySql => &[],
        _ => &[
            (
                TASKS,
                LOCKED_INDEX,
                "(locked_by, locked_at) WHERE locked_by IS NOT NULL",
            ),
            (
                TASKS,
                FAILED_INDEX,
                "(failed_at) WHERE failed_at IS NOT NULL",
            ),
            (
                HISTORY,
                HISTORY_FAILED_INDEX,
                "(failed_at) WHERE failed_at IS NOT NULL",
            ),
        ],
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if django_owns_tables(manager).await? {
            return Ok(());
        }
        let backend = manager.get_database_backend();
        for (table, name, definition) in partial_indexes(backend) {
            if !manager.has_index(*table, *name).await? {
                manager
                    .get_connection()
                    .execute_unprepared(&format!("CREATE INDEX {name} ON {table} {definition}"))
                    .await?;
            }
        }
        for (table, indexes, keep) in [
            (TASKS, &TASK_INDEXES, lean_task_columns(backend)),
            (HISTORY, &COMPLETED_INDEXES, lean_history_columns(backend)),
        ] {
            for (column, name) in indexes.iter() {
                if keep.contains(column) || !manager.has_index(table, *name).await? {
                    continue;
                }
                manager
                    .drop_index(
                        Index::drop()
                            .name(*name)
                            .table(Alias::new(table))
                            .to_owned(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_django_indexes(manager).await?;
        for (table, name, _) in partial_indexes(manager.get_database_backend()) {
            if manager.has_index(*table, *name).await? {
                manager
                    .drop_index(
                        Index::drop()
                            .name(*name)
                            .table(Alias::new(*table))
                            .to_owned(),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

/// Creates every index of Django's `0001_initial` that is missing, under
/// Django's names, and returns their names: what a Django app's admin and
/// `process_tasks` read through. `bgtasks migrate --django-indexes` runs it
/// after the migrations; run it before a Django app attaches to tables this
/// crate created. An index on the column under another name (MySQL's
/// foreign key index, which Django uses instead of its own) counts as
/// present.
pub async fn django_indexes<'c, C: IntoSchemaManagerConnection<'c>>(
    conn: C,
) -> Result<Vec<String>, DbErr> {
    add_django_indexes(&SchemaManager::new(conn)).await
}

async fn add_django_indexes(manager: &SchemaManager<'_>) -> Result<Vec<String>, DbErr> {
    let mut created = Vec::new();
    for (table, indexes) in [(TASKS, &TASK_INDEXES), (HISTORY, &COMPLETED_INDEXES)] {
        if !manager.has_table(table).await? {
            continue;
        }
        for (column, name) in indexes.iter() {
            if manager.has_index(table, *name).await? || led_by(manager, table, column).await? {
                continue;
            }
            manager
                .create_index(django_index(table, column, name))
                .await?;
            created.push((*name).to_owned());
        }
    }
    Ok(created)
}

/// Whether MySQL has another index on `table` that starts with `column`
/// (the foreign key index Django's tables carry on
/// `creator_content_type_id`). Other backends: false.
async fn led_by(manager: &SchemaManager<'_>, table: &str, column: &str) -> Result<bool, DbErr> {
    if manager.get_database_backend() != DbBackend::MySql || column != "creator_content_type_id" {
        return Ok(false);
    }
    let row = manager
        .get_connection()
        .query_one_raw(sea_orm_migration::sea_orm::Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT COUNT(*) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ? \
             AND seq_in_index = 1",
            [table.into(), column.into()],
        ))
        .await?;
    Ok(row
        .and_then(|row| row.try_get_by_index::<i64>(0).ok())
        .is_some_and(|n| n > 0))
}
