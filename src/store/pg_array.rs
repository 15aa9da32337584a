//! PostgreSQL statements whose text does not depend on how many rows they
//! carry: a list of values is one array parameter (`id = ANY($2::int4[])`),
//! and many rows are one array per column (`INSERT ... SELECT * FROM
//! unnest($1::text[], $2::int4[], ...)`).
//!
//! Why: sqlx prepares each statement text once per connection and keeps
//! the last 100. A text that spells out `IN ($2, $3, ...)` or a `VALUES`
//! list per row is a new statement for every batch size, so a busy runner
//! parsed, planned and described (one more round trip) about half of its
//! statements anew, and a 128-row history insert bound 2,176 values that
//! the server parsed one by one. One array per column is parsed once.
//!
//! Arrays are bound as their text form (`{1,2,NULL}`) and cast in the
//! statement: SeaORM binds arrays only without `NULL` elements, and the
//! nullable columns need them. [`literal`] writes that form.

use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{ActiveModelTrait, DbErr, EntityTrait, Iterable, Value};

use super::Sql;

/// A value that goes into a PostgreSQL array parameter.
pub(crate) trait Element {
    /// The array's type in the statement's cast.
    const ARRAY_TYPE: &'static str;
    /// Appends the element as array text.
    fn write(&self, out: &mut String);
}

impl Element for i32 {
    const ARRAY_TYPE: &'static str = "int4[]";
    fn write(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

impl Element for i64 {
    const ARRAY_TYPE: &'static str = "int8[]";
    fn write(&self, out: &mut String) {
        out.push_str(&self.to_string());
    }
}

impl Element for &str {
    const ARRAY_TYPE: &'static str = "text[]";
    fn write(&self, out: &mut String) {
        quoted(out, self);
    }
}

/// `{e1,e2,...}`: the array text of `values`.
pub(crate) fn literal<E: Element>(values: impl IntoIterator<Item = E>) -> String {
    let mut out = String::from("{");
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        value.write(&mut out);
    }
    out.push('}');
    out
}

/// Appends `text` as a double-quoted array element: every element is
/// quoted, so none reads as `NULL` or splits at a comma or brace.
fn quoted(out: &mut String, text: &str) {
    out.reserve(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A time as PostgreSQL's `timestamptz` input reads it, in UTC, with the
/// microseconds the column keeps (a bound value is cut the same way).
fn timestamp(out: &mut String, at: DateTime<Utc>) {
    out.push('"');
    out.push_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true));
    out.push('"');
}

/// One column of an [`insert`]: its name, element type and array text.
struct Column {
    name: String,
    array_type: &'static str,
    text: String,
}

impl Column {
    /// A column whose array type is that of `value`'s variant (SeaORM
    /// gives a `NULL` the variant of its column).
    fn of(name: &str, value: &Value, rows: usize) -> Self {
        let array_type = match value {
            Value::Int(_) => i32::ARRAY_TYPE,
            // Django's PositiveIntegerField: `integer` on PostgreSQL (a
            // value past i32 is refused before the statement is built).
            Value::Unsigned(_) => i32::ARRAY_TYPE,
            Value::BigInt(_) => i64::ARRAY_TYPE,
            Value::Bool(_) => "bool[]",
            Value::ChronoDateTimeUtc(_) => "timestamptz[]",
            _ => <&str>::ARRAY_TYPE,
        };
        let mut text = String::with_capacity(rows * 8 + 2);
        text.push('{');
        Self {
            name: name.to_owned(),
            array_type,
            text,
        }
    }

    fn push(&mut self, value: &Value) -> Result<(), DbErr> {
        if self.text.len() > 1 {
            self.text.push(',');
        }
        let out = &mut self.text;
        match value {
            Value::String(None)
            | Value::Int(None)
            | Value::BigInt(None)
            | Value::Unsigned(None)
            | Value::Bool(None)
            | Value::ChronoDateTimeUtc(None) => out.push_str("NULL"),
            Value::String(Some(text)) => text.as_str().write(out),
            Value::Int(Some(n)) => n.write(out),
            Value::BigInt(Some(n)) => n.write(out),
            Value::Unsigned(Some(n)) => i64::from(*n).write(out),
            Value::Bool(Some(b)) => out.push(if *b { 't' } else { 'f' }),
            Value::ChronoDateTimeUtc(Some(at)) => timestamp(out, *at),
            other => {
                return Err(DbErr::Custom(format!(
                    "column {} holds a value the array insert does not write: {other:?}",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// `INSERT INTO <table> (<columns>) SELECT * FROM unnest(<one array per
/// column>)`, for `rows` of one entity: the columns are those set in the
/// first row (every row must set the same ones, as in a multi-row
/// `VALUES`), in the entity's order, and the rows go in (and take their
/// ids) in slice order. `tail` follows (`RETURNING id`, `ON CONFLICT`).
pub(crate) fn insert<A: ActiveModelTrait>(rows: &[A], tail: &str) -> Result<Sql, DbErr> {
    let mut columns: Vec<(<A::Entity as EntityTrait>::Column, Column)> = Vec::new();
    let Some(first) = rows.first() else {
        return Err(DbErr::Custom("an array insert of no rows".into()));
    };
    for key in <A::Entity as EntityTrait>::Column::iter() {
        if let Some(value) = first.get(key).into_value() {
            let name = sea_orm::IdenStatic::as_str(&key);
            columns.push((key, Column::of(name, &value, rows.len())));
        }
    }
    for row in rows {
        for (key, column) in &mut columns {
            let value = row.get(*key).into_value().ok_or_else(|| {
                DbErr::Custom(format!(
                    "column {} is set in the first row of an insert but not in every row",
                    column.name
                ))
            })?;
            column.push(&value)?;
        }
    }
    let table = sea_orm::IdenStatic::as_str(&A::Entity::default()).to_owned();
    let names: Vec<&str> = columns.iter().map(|(_, c)| c.name.as_str()).collect();
    let mut sql = Sql::new(sea_orm::DbBackend::Postgres);
    sql.push(&format!(
        "INSERT INTO {table} ({}) SELECT * FROM unnest(",
        names.join(", ")
    ));
    for (i, (_, column)) in columns.into_iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        let Column {
            mut text,
            array_type,
            ..
        } = column;
        text.push('}');
        sql.bind(text).push("::").push(array_type);
    }
    sql.push(")").push(tail);
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_quoted_and_escaped() {
        assert_eq!(literal([1i32, -2, 3]), "{1,-2,3}");
        assert_eq!(literal(Vec::<i32>::new()), "{}");
        assert_eq!(
            literal(["a", "NULL", "x,y", "q\"uo\\te", "{}", ""]),
            r#"{"a","NULL","x,y","q\"uo\\te","{}",""}"#
        );
    }

    #[test]
    fn timestamps_keep_microseconds_in_utc() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T11:22:25.123456789+02:00")
            .unwrap()
            .with_timezone(&Utc);
        let mut out = String::new();
        timestamp(&mut out, at);
        assert_eq!(out, "\"2026-12-03T09:22:25.123456Z\"");
    }
}
