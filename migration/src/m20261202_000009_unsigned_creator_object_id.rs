//! MySQL/MariaDB: `creator_object_id` becomes `integer UNSIGNED`, the type
//! Django's `PositiveIntegerField` has there.
//!
//! Earlier versions of this crate created a signed `integer` on MySQL, so
//! that both schema owners differed: a Rust reader of one could not decode
//! the other's column (the driver refuses an unsigned column for a signed
//! type and the reverse), and object ids from 2147483648 to 4294967295,
//! valid in Django, did not fit. Now both tables have Django's type
//! whoever created them. Tables Django created already have it and are
//! left alone; other backends are untouched (Django's type there is a
//! non-negative `integer`).
//!
//! `MODIFY` rewrites the table on MySQL: on a large table this migration
//! takes as long as copying it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000009_unsigned_creator_object_id"
    }
}

const TABLES: [&str; 2] = ["background_task", "background_task_completedtask"];
const COLUMN: &str = "creator_object_id";

/// The column's type as `information_schema` prints it (`int(11)`,
/// `int(10) unsigned`).
async fn column_type(manager: &SchemaManager<'_>, table: &str) -> Result<Option<String>, DbErr> {
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT CAST(COLUMN_TYPE AS CHAR) FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            [table.into(), COLUMN.into()],
        ))
        .await?;
    row.map(|row| row.try_get_by_index::<String>(0)).transpose()
}

async fn set_type(manager: &SchemaManager<'_>, signed: bool) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::MySql {
        return Ok(());
    }
    for table in TABLES {
        let Some(current) = column_type(manager, table).await? else {
            continue;
        };
        let unsigned = current.to_ascii_lowercase().contains("unsigned");
        if unsigned != signed {
            continue;
        }
        let target = if signed {
            "integer"
        } else {
            "integer UNSIGNED"
        };
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "ALTER TABLE `{table}` MODIFY `{COLUMN}` {target} NULL"
            ))
            .await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_type(manager, false).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Back to the signed column of migration 1's earlier versions,
        // unless Django owns the tables: its column stays as Django made it.
        if crate::m20261127_000001_create_seed_tables::django_owns_tables(manager).await? {
            return Ok(());
        }
        set_type(manager, true).await
    }
}
