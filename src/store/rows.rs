//! Reading rows of the queue's tables one at a time, so that one row that
//! cannot be decoded names itself instead of failing every read around it.
//!
//! The tables are shared: Django's migrations may have created them (on
//! MySQL `creator_object_id` is then `INT UNSIGNED`), an operator may have
//! edited a row by hand, and SQLite stores whatever it is given in any
//! column (text in `priority`, `'yesterday'` in `run_at`). SeaORM decodes a
//! whole result set or fails; a runner whose claim fails on one row would
//! retry that claim forever and run nothing behind it. So every read of a
//! task or history row in this crate goes through here:
//!
//! - [`all`] / [`one`]: strict reads for one-row views and writes that need
//!   the row (`show`, retry): an undecodable row is an
//!   [`Error::Unreadable`] that names the row, the column and the value.
//! - [`lenient`]: list reads (claims, pages): undecodable rows are returned
//!   apart, with the same diagnosis, and the others are read as usual.
//!
//! The diagnosis walks the entity's columns in order and reads each with
//! its model type, so the first column that does not decode is the one
//! reported, with its value as the database prints it.

use sea_orm::sea_query::ArrayType;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Iterable, ModelTrait,
    QueryResult, QueryTrait, Select, Statement, TryGetError, TryGetable,
};

use crate::error::{Error, Result, UnreadableRow};

/// Longest value quoted in a diagnosis; longer values are cut.
const MAX_QUOTED: usize = 120;

/// Every row `statement` returns, decoded; the first row that does not
/// decode is an [`Error::Unreadable`].
pub(crate) async fn all<E, C>(conn: &C, statement: Statement) -> Result<Vec<E::Model>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let backend = conn.get_database_backend();
    let rows = conn.query_all_raw(statement).await?;
    rows.iter()
        .map(|row| {
            decode::<E>(row, backend).map_err(|unreadable| Error::Unreadable(Box::new(unreadable)))
        })
        .collect()
}

/// The first row `statement` returns, decoded (strict, as [`all`]).
pub(crate) async fn one<E, C>(conn: &C, statement: Statement) -> Result<Option<E::Model>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    match conn.query_one_raw(statement).await? {
        None => Ok(None),
        Some(row) => decode::<E>(&row, conn.get_database_backend())
            .map(Some)
            .map_err(|unreadable| Error::Unreadable(Box::new(unreadable))),
    }
}

/// Every row `statement` returns: the decoded ones, in order, and apart
/// those that cannot be decoded.
pub(crate) async fn lenient<E, C>(
    conn: &C,
    statement: Statement,
) -> Result<(Vec<E::Model>, Vec<UnreadableRow>)>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let rows = conn.query_all_raw(statement).await?;
    Ok(split::<E>(&rows, conn.get_database_backend()))
}

/// `rows` (read on `backend`) decoded, and apart those that cannot be.
pub(crate) fn split<E: EntityTrait>(
    rows: &[QueryResult],
    backend: DbBackend,
) -> (Vec<E::Model>, Vec<UnreadableRow>) {
    let mut models = Vec::with_capacity(rows.len());
    let mut unreadable = Vec::new();
    for row in rows {
        match decode::<E>(row, backend) {
            Ok(model) => models.push(model),
            Err(bad) => unreadable.push(bad),
        }
    }
    (models, unreadable)
}

/// A SeaORM select as a statement for the readers above, timestamps bound
/// as this crate binds them.
pub(crate) fn statement<E: EntityTrait, C: ConnectionTrait>(
    conn: &C,
    select: Select<E>,
) -> Statement {
    super::portable(select.build(conn.get_database_backend()))
}

/// [`all`] of a SeaORM select.
pub(crate) async fn select_all<E, C>(conn: &C, select: Select<E>) -> Result<Vec<E::Model>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    all::<E, C>(conn, statement(conn, select)).await
}

/// [`one`] of a SeaORM select.
pub(crate) async fn select_one<E, C>(conn: &C, select: Select<E>) -> Result<Option<E::Model>>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    use sea_orm::QuerySelect;
    one::<E, C>(conn, statement(conn, select.limit(1))).await
}

/// One row (read on `backend`) as `E::Model`, or what is wrong with it.
/// Timestamps stored naive in the database's time zone (see
/// [`crate::db::set_time_zone`]) are read as the instants they mean.
pub(crate) fn decode<E: EntityTrait>(
    row: &QueryResult,
    backend: DbBackend,
) -> Result<E::Model, UnreadableRow> {
    match <E::Model as FromQueryResult>::from_query_result(row, "") {
        Ok(mut model) => {
            if super::naive_zone(backend).is_some() {
                localize::<E>(&mut model, backend);
            }
            Ok(model)
        }
        Err(err) => Err(diagnose::<E>(row, &err.to_string())),
    }
}

/// The decoder reads a naive timestamp as UTC; in a database whose naive
/// timestamps are another zone's wall clock, each becomes the instant it
/// means there.
fn localize<E: EntityTrait>(model: &mut E::Model, backend: DbBackend) {
    for column in E::Column::iter() {
        if <E::Model as ModelTrait>::get_value_type(column) != ArrayType::ChronoDateTimeUtc {
            continue;
        }
        if let sea_orm::Value::ChronoDateTimeUtc(Some(read)) = model.get(column) {
            let meant = super::from_stored(backend, read.naive_utc());
            // Setting a value of the column's own type cannot fail.
            let _ = model.try_set(column, sea_orm::Value::ChronoDateTimeUtc(Some(meant)));
        }
    }
}

/// Finds the first column of `row` that does not decode as `E::Model`
/// expects, and says why. `fallback` is the decoder's own message, for the
/// case where every column reads on its own.
fn diagnose<E: EntityTrait>(row: &QueryResult, fallback: &str) -> UnreadableRow {
    let table = E::default().table_name().to_owned();
    let id = raw_text(row, "id").filter(|id| id != "NULL");
    for column in E::Column::iter() {
        let name = sea_orm::IdenStatic::as_str(&column);
        let nullable = column.def().is_null();
        let kind = <E::Model as ModelTrait>::get_value_type(column);
        let Some(problem) = check_column(row, name, nullable, &kind) else {
            continue;
        };
        return UnreadableRow {
            table,
            id,
            column: Some(name.to_owned()),
            value: raw_text(row, name),
            reason: problem,
        };
    }
    UnreadableRow {
        table,
        id,
        column: None,
        value: None,
        reason: fallback.to_owned(),
    }
}

/// Why column `name` of `row` does not read as `kind`, or `None` when it does.
fn check_column(row: &QueryResult, name: &str, nullable: bool, kind: &ArrayType) -> Option<String> {
    let outcome = match kind {
        ArrayType::Int => probe::<i32>(row, name),
        ArrayType::BigInt => probe::<i64>(row, name),
        ArrayType::Unsigned => probe::<u32>(row, name),
        ArrayType::String => probe::<String>(row, name),
        ArrayType::Bool => probe::<bool>(row, name),
        ArrayType::ChronoDateTimeUtc => probe::<chrono::DateTime<chrono::Utc>>(row, name),
        ArrayType::ChronoDateTime => probe::<chrono::NaiveDateTime>(row, name),
        _ => Probe::Fine,
    };
    match outcome {
        Probe::Fine => None,
        Probe::Null if nullable => None,
        Probe::Null => Some("but this column must have a value".to_owned()),
        Probe::Bad(detail) => Some(format!("which is not {} ({detail})", expected(kind))),
    }
}

enum Probe {
    Fine,
    Null,
    Bad(String),
}

fn probe<T: TryGetable>(row: &QueryResult, name: &str) -> Probe {
    match row.try_get_nullable::<T>("", name) {
        Ok(_) => Probe::Fine,
        Err(TryGetError::Null(_)) => Probe::Null,
        Err(TryGetError::DbErr(err)) => Probe::Bad(short_reason(&err.to_string())),
    }
}

/// What a column of `kind` holds, for a person.
fn expected(kind: &ArrayType) -> &'static str {
    match kind {
        ArrayType::Int => "a 32-bit integer",
        ArrayType::BigInt => "a 64-bit integer",
        ArrayType::Unsigned => "an integer from 0 to 4294967295",
        ArrayType::String => "text",
        ArrayType::Bool => "a boolean",
        ArrayType::ChronoDateTimeUtc | ArrayType::ChronoDateTime => "a timestamp",
        _ => "a value of the column's type",
    }
}

/// The driver's message without SeaORM's and sqlx's wrapping.
fn short_reason(message: &str) -> String {
    let message = message
        .rsplit_once("error occurred while decoding column")
        .map_or(message, |(_, rest)| rest);
    let message = message
        .split_once(": ")
        .map_or(message, |(_, rest)| rest)
        .trim();
    quote_cut(message)
}

/// Column `name` of `row` as the database prints it: text, a number, a
/// timestamp, `NULL`; `None` when no reading of it works.
pub(crate) fn raw_text(row: &QueryResult, name: &str) -> Option<String> {
    fn read<T: TryGetable>(row: &QueryResult, name: &str) -> Option<Option<T>> {
        match row.try_get_nullable::<T>("", name) {
            Ok(value) => Some(Some(value)),
            Err(TryGetError::Null(_)) => Some(None),
            Err(TryGetError::DbErr(_)) => None,
        }
    }
    macro_rules! attempt {
        ($ty:ty, $show:expr) => {
            if let Some(value) = read::<$ty>(row, name) {
                return Some(value.map_or_else(|| "NULL".to_owned(), $show));
            }
        };
    }
    attempt!(String, |text: String| format!("{:?}", quote_cut(&text)));
    attempt!(i64, |n: i64| n.to_string());
    attempt!(u64, |n: u64| n.to_string());
    attempt!(u32, |n: u32| n.to_string());
    attempt!(i32, |n: i32| n.to_string());
    attempt!(f64, |n: f64| n.to_string());
    attempt!(chrono::DateTime<chrono::Utc>, |t: chrono::DateTime<
        chrono::Utc,
    >| t.to_rfc3339());
    attempt!(chrono::NaiveDateTime, |t: chrono::NaiveDateTime| t
        .to_string());
    attempt!(Vec<u8>, |bytes: Vec<u8>| format!(
        "{:?}",
        quote_cut(&String::from_utf8_lossy(&bytes))
    ));
    None
}

/// `text`, cut to [`MAX_QUOTED`] characters with an ellipsis.
fn quote_cut(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX_QUOTED).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_messages_lose_their_wrapping() {
        assert_eq!(
            short_reason(
                "Query Error: error occurred while decoding column \"priority\": mismatched types; \
                 Rust type `core::option::Option<i32>` (as SQL type `INTEGER`) is not compatible \
                 with SQL type `TEXT`"
            ),
            "mismatched types; Rust type `core::option::Option<i32>` (as SQL type `INTEGER`) is \
             not compatible with SQL type `TEXT`"
        );
        assert_eq!(short_reason("plain"), "plain");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "x".repeat(500);
        let cut = quote_cut(&long);
        assert_eq!(cut.chars().count(), MAX_QUOTED + 1);
        assert!(cut.ends_with('…'));
    }
}
