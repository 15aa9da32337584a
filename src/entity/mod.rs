//! SeaORM entities of the queue's tables. Plain data: no query logic lives
//! here (see `crate::store` for the queries).
//!
//! Both tables are django-background-tasks' own, column for column, so the
//! same rows can be read by Django's admin. All timestamps are UTC.
//!
//! On SQLite timestamps are stored as Django writes them, naive UTC text
//! (`2026-11-27 21:10:13.702496`), and compared as text. In your own SeaORM
//! filters on these tables, compare with naive UTC values
//! (`task::Column::RunAt.lte(Utc::now().naive_utc())`), which bind in that
//! same text on SQLite and mean the same instant on PostgreSQL and MySQL; a
//! `DateTime<Utc>` binds as RFC 3339 text on SQLite and sorts after every
//! stored value of the same day.

pub mod completed_task;
pub mod dependency;
pub mod key_limit;
pub mod queue_limit;
pub mod queue_pause;
pub mod rate_limit;
pub mod runner;
pub mod schedule;
pub mod step;
pub mod task;
