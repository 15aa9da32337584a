//! Statements of history retention: which rows of
//! `background_task_completedtask` a policy selects, and their deletion in
//! bounded batches.
//!
//! A batch is two statements: select up to N ids in index order, then
//! delete those ids. MySQL and MariaDB refuse `LIMIT` inside an `IN`
//! subquery, and a `DELETE ... LIMIT` would not say which rows went, so the
//! ids travel through the client on every backend. The delete repeats the
//! selection's condition: a row whose id was selected but that changed
//! since (SQLite may reuse the id of a deleted newest row) is left alone.
//!
//! Every statement runs through [`portable`](super::portable), so that
//! its times compare with the stored ones on SQLite (Django's text).
//!
//! Each selection walks one of Django's single-column indexes, oldest
//! first, and stops after N rows: succeeded rows by `run_at`, failed rows
//! by `failed_at`, rows beyond the newest ones by `run_at`. No batch scans
//! the whole table, so a batch costs about the same on a million rows as
//! on a hundred. (A preview's capped counts may read every matching row.)

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, Query, SelectStatement};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};

use super::{execute, portable};
use crate::entity::completed_task::{Column, Entity};
use crate::error::Result;

/// A set of history rows a retention policy deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Doomed {
    /// Succeeded rows that finished before this time.
    Completed(DateTime<Utc>),
    /// Failed rows that failed before this time.
    Failed(DateTime<Utc>),
    /// Rows older than the newest row to keep, given as its `(run_at, id)`
    /// (ties on `run_at` are broken by id); `None`: every row.
    OlderThan(Option<(DateTime<Utc>, i32)>),
}

impl Doomed {
    fn condition(self) -> Condition {
        match self {
            // `NOT (failed_at IS NOT NULL)` rather than `failed_at IS
            // NULL`, which SQLite's planner (without statistics) answers
            // from the failed_at index: every succeeded row, then a sort.
            // This way it walks the run_at index, as the others do.
            Doomed::Completed(before) => Condition::all()
                .add(Condition::all().add(Column::FailedAt.is_not_null()).not())
                .add(Column::RunAt.lt(before)),
            // `IS NOT NULL` as well, so that `NOT` of this condition (a
            // preview's "not deleted by age") holds for succeeded rows
            // instead of being NULL.
            Doomed::Failed(before) => Condition::all()
                .add(Column::FailedAt.is_not_null())
                .add(Column::FailedAt.lt(before)),
            // `run_at <= at AND (run_at < at OR id < kept_id)`: a range of
            // the run_at index, where an `OR` at the top would make some
            // planners scan the table.
            Doomed::OlderThan(Some((at, id))) => Condition::all().add(Column::RunAt.lte(at)).add(
                Condition::any()
                    .add(Column::RunAt.lt(at))
                    .add(Column::Id.lt(id)),
            ),
            Doomed::OlderThan(None) => Condition::all().add(Column::Id.is_not_null()),
        }
    }

    /// The column whose index the selection walks, oldest first.
    fn order(self) -> Column {
        match self {
            Doomed::Failed(_) => Column::FailedAt,
            Doomed::Completed(_) | Doomed::OlderThan(_) => Column::RunAt,
        }
    }
}

/// Up to `limit` ids of `doomed` rows, oldest first.
pub(crate) async fn select_ids<C: ConnectionTrait>(
    conn: &C,
    doomed: Doomed,
    limit: u64,
) -> Result<Vec<i32>> {
    let select = select_ids_query(doomed, limit).build(conn.get_database_backend());
    let rows = conn.query_all_raw(portable(select)).await?;
    Ok(rows
        .iter()
        .map(|row| row.try_get_by_index::<i32>(0))
        .collect::<Result<_, _>>()?)
}

fn select_ids_query(doomed: Doomed, limit: u64) -> sea_orm::Select<Entity> {
    Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(doomed.condition())
        .order_by_asc(doomed.order())
        .limit(limit)
}

/// Deletes the rows `ids` that are still `doomed`; returns how many went.
pub(crate) async fn delete<C: ConnectionTrait>(
    conn: &C,
    doomed: Doomed,
    ids: &[i32],
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    // The workflow steps these rows record go with them.
    super::workflows::forget_with_history(conn, ids).await?;
    let delete = Entity::delete_many()
        .filter(Column::Id.is_in(ids.iter().copied()))
        .filter(doomed.condition());
    Ok(execute(conn, delete).await?.rows_affected())
}

/// `(run_at, id)` of the `keep`-th newest history row that none of
/// `spared` selects: rows older than it are beyond the newest `keep`.
/// `None` when there are at most `keep` such rows (or `keep` is 0, which
/// the caller reads as "keep none").
pub(crate) async fn newest_kept<C: ConnectionTrait>(
    conn: &C,
    keep: u64,
    spared: &[Doomed],
) -> Result<Option<(DateTime<Utc>, i32)>> {
    let Some(offset) = keep.checked_sub(1) else {
        return Ok(None);
    };
    let mut select = Entity::find()
        .select_only()
        .column(Column::RunAt)
        .column(Column::Id);
    for doomed in spared {
        select = select.filter(doomed.condition().not());
    }
    // Walked backwards from the newest row: the run_at index holds the id
    // (rowid on SQLite, the primary key in InnoDB; PostgreSQL sorts the
    // few ties incrementally), so this reads `keep` index entries.
    let select = select
        .order_by_desc(Column::RunAt)
        .order_by_desc(Column::Id)
        .offset(offset)
        .limit(1)
        .build(conn.get_database_backend());
    let Some(row) = conn.query_one_raw(portable(select)).await? else {
        return Ok(None);
    };
    // Read as stored, so that binding it again means the same time.
    let read = row.try_get_by_index::<DateTime<Utc>>(0)?;
    Ok(Some((
        super::from_stored(conn.get_database_backend(), read.naive_utc()),
        row.try_get_by_index::<i32>(1)?,
    )))
}

/// How many rows are `doomed` and selected by none of `spared`, counted up
/// to `cap` (an inner `LIMIT`, so a huge history is not counted whole).
pub(crate) async fn count<C: ConnectionTrait>(
    conn: &C,
    doomed: Doomed,
    spared: &[Doomed],
    cap: u64,
) -> Result<u64> {
    let backend = conn.get_database_backend();
    let count = backend.build(&count_query(doomed, spared, cap));
    let counted = match conn.query_one_raw(portable(count)).await? {
        Some(row) => row.try_get_by_index::<i64>(0)?,
        None => 0,
    };
    Ok(u64::try_from(counted).unwrap_or_default())
}

fn count_query(doomed: Doomed, spared: &[Doomed], cap: u64) -> SelectStatement {
    let mut rows = Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(doomed.condition());
    for spared in spared {
        rows = rows.filter(spared.condition().not());
    }
    let capped = rows.limit(cap).into_query();
    Query::select()
        .expr(Expr::col(Asterisk).count())
        .from_subquery(capped, Alias::new("capped"))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use sea_orm::DbBackend;

    use super::*;

    fn sql(doomed: Doomed) -> String {
        select_ids_query(doomed, 7)
            .build(DbBackend::Sqlite)
            .to_string()
    }

    #[test]
    fn each_rule_walks_its_index_oldest_first() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let completed = sql(Doomed::Completed(at));
        assert!(
            completed.contains(
                r#"WHERE (NOT "background_task_completedtask"."failed_at" IS NOT NULL) AND"#
            ),
            "{completed}"
        );
        assert!(
            completed.ends_with(r#"ORDER BY "background_task_completedtask"."run_at" ASC LIMIT 7"#),
            "{completed}"
        );
        let failed = sql(Doomed::Failed(at));
        assert!(
            failed.ends_with(r#"ORDER BY "background_task_completedtask"."failed_at" ASC LIMIT 7"#),
            "{failed}"
        );
        let older = sql(Doomed::OlderThan(Some((at, 3))));
        assert!(
            older.ends_with(r#"ORDER BY "background_task_completedtask"."run_at" ASC LIMIT 7"#),
            "{older}"
        );
    }

    #[test]
    fn a_preview_counts_what_the_age_rules_spare() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let count = count_query(
            Doomed::OlderThan(Some((at, 3))),
            &[Doomed::Completed(at), Doomed::Failed(at)],
            100,
        )
        .to_string(sea_orm::sea_query::SqliteQueryBuilder);
        assert!(count.starts_with("SELECT COUNT(*) FROM (SELECT"), "{count}");
        assert!(
            count.contains(
                r#"AND (NOT ((NOT "background_task_completedtask"."failed_at" IS NOT NULL) AND"#
            ),
            "{count}"
        );
        assert!(
            count.contains(
                r#"AND (NOT ("background_task_completedtask"."failed_at" IS NOT NULL AND"#
            ),
            "{count}"
        );
        assert!(count.ends_with(r#"LIMIT 100) AS "capped""#), "{count}");
    }
}
