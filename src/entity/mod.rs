//! SeaORM entities of the queue's tables. Plain data: no query logic lives
//! here (see `crate::store` for the queries).
//!
//! Both tables are django-background-tasks' own, column for column, so the
//! same rows can be read by Django's admin. All timestamps are UTC.

pub mod completed_task;
pub mod runner;
pub mod task;
