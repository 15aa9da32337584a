//! Unique tasks: a nullable `unique_key` on `background_task` and a unique
//! index over it.
//!
//! Only live rows (waiting or running) are in this table, so the index
//! holds a key for exactly as long as its task lives. NULLs never conflict
//! in a unique index on PostgreSQL, MySQL and SQLite, so rows without a key
//! (every row Django inserts) are never refused.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261127_000007_add_unique_key"
    }
}

const TASKS: &str = "background_task";
const COLUMN: &str = "unique_key";
/// Name of the unique index.
pub const UNIQUE_INDEX: &str = "background_task_unique_key_uniq";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column(TASKS, COLUMN).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new(TASKS))
                        // A task hash: 40 hex characters; room for longer keys.
                        .add_column(ColumnDef::new(Alias::new(COLUMN)).string_len(64).null())
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_index(
                Index::create()
                    .name(UNIQUE_INDEX)
                    .table(Alias::new(TASKS))
                    .col(Alias::new(COLUMN))
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(UNIQUE_INDEX)
                    .table(Alias::new(TASKS))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Alias::new(TASKS))
                    .drop_column(Alias::new(COLUMN))
                    .to_owned(),
            )
            .await
    }
}
