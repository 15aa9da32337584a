//! Schema migrations of `background-tasks`.
//!
//! The tables are django-background-tasks' own (`background_task` and
//! `background_task_completedtask`, 17 columns each), so a database migrated
//! here looks to Django like one migrated by Django, and the reverse. Django's
//! single-column indexes are created under Django's names, then, when no
//! Django app shares the tables, cut down to the ones the queue reads
//! through (migration 12; `bgtasks migrate --django-indexes` puts them back).
//!
//! The migration history is kept in its own table,
//! [`MIGRATION_TABLE`](Migrator::MIGRATION_TABLE), so that an application with
//! its own SeaORM migrations (and its own `seaql_migrations` table) can run
//! both migrators on one database without either seeing the other's rows.
//!
//! Run it as a library (`Migrator::up(&db, None)`), through `bgtasks migrate`,
//! or as its own CLI: `cargo run -p background-tasks-migration -- up`.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_seed_tables;
mod m20261127_000002_add_claim_index;
mod m20261127_000003_create_runner_table;
mod m20261127_000004_notify_on_insert;
mod m20261127_000005_sqlite_django_timestamps;
mod m20261127_000006_add_task_result;
mod m20261127_000007_add_unique_key;
mod m20261127_000008_add_task_features;
mod m20261202_000009_unsigned_creator_object_id;
mod m20261202_000010_add_queue_controls;
mod m20261202_000011_add_trace_context;
mod m20261203_000012_lean_indexes;
mod m20261203_000013_add_dependencies;
mod m20261203_000014_add_rate_limits;
mod m20261203_000015_add_task_keys;
mod m20261203_000016_index_step_workflow;

/// `(column, index name)` of Django's single-column indexes on
/// `background_task` and on `background_task_completedtask`: what
/// `bgtasks doctor` expects to find.
pub use m20261127_000001_create_seed_tables::{COMPLETED_INDEXES, TASK_INDEXES};
/// Name of the index the runner's claim walks, on `background_task`.
pub use m20261127_000002_add_claim_index::CLAIM_INDEX;
/// The PostgreSQL channel on which an insert into `background_task` is announced.
pub use m20261127_000004_notify_on_insert::CHANNEL as NOTIFY_CHANNEL;
/// Name of the PostgreSQL trigger (and its function) that announces inserts.
pub use m20261127_000004_notify_on_insert::TRIGGER as NOTIFY_TRIGGER;

/// Names of the cron schedule and queue limit tables.
pub use m20261127_000008_add_task_features::{QUEUE_LIMITS, SCHEDULES};
/// This crate's table of paused queues.
pub use m20261202_000010_add_queue_controls::QUEUE_PAUSES;
/// The lean index set kept when no Django app shares the tables, and the
/// function that puts Django's indexes back (`bgtasks migrate --django-indexes`).
pub use m20261203_000012_lean_indexes::{
    FAILED_INDEX, HISTORY_FAILED_INDEX, LOCKED_INDEX, django_indexes, lean_history_columns,
    lean_task_columns, partial_indexes,
};
/// The tables of steps and their dependencies, the history's index on the
/// id a task had, and the `run_at` of a step that waits.
pub use m20261203_000013_add_dependencies::{
    DEPENDENCIES, HELD_UNTIL, HISTORY_TASK_ID_INDEX, STEPS,
};
/// The tables of rate limits and of the starts they count.
pub use m20261203_000014_add_rate_limits::{RATE_LIMITS, STARTS};
/// The task key column, the index keyed claims walk, the key policies and
/// the per-key start ledger.
pub use m20261203_000015_add_task_keys::{KEY_COLUMN, KEY_INDEX, KEY_LIMITS, KEY_STARTS};
/// The index over the steps of a workflow.
pub use m20261203_000016_index_step_workflow::STEP_WORKFLOW_INDEX;

/// Every migration of the queue's schema, in order.
pub struct Migrator;

impl Migrator {
    /// Name of the table that records which of these migrations ran.
    pub const MIGRATION_TABLE: &'static str = "background_tasks_migrations";
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_seed_tables::Migration),
            Box::new(m20261127_000002_add_claim_index::Migration),
            Box::new(m20261127_000003_create_runner_table::Migration),
            Box::new(m20261127_000004_notify_on_insert::Migration),
            Box::new(m20261127_000005_sqlite_django_timestamps::Migration),
            Box::new(m20261127_000006_add_task_result::Migration),
            Box::new(m20261127_000007_add_unique_key::Migration),
            Box::new(m20261127_000008_add_task_features::Migration),
            Box::new(m20261202_000009_unsigned_creator_object_id::Migration),
            Box::new(m20261202_000010_add_queue_controls::Migration),
            Box::new(m20261202_000011_add_trace_context::Migration),
            Box::new(m20261203_000012_lean_indexes::Migration),
            Box::new(m20261203_000013_add_dependencies::Migration),
            Box::new(m20261203_000014_add_rate_limits::Migration),
            Box::new(m20261203_000015_add_task_keys::Migration),
            Box::new(m20261203_000016_index_step_workflow::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        Alias::new(Self::MIGRATION_TABLE).into_iden()
    }
}
