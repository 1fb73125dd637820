//! [`Repo`]: the queries and changes over one connection or transaction,
//! one module per table (`referrals`, `links`, `outbox`, …), and [`FromRow`],
//! how a stored row becomes a model.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Row, Statement};
use serde_json::Value;

use super::{StoreError, parse_ts};

/// Queries and changes, used inside [`super::Store::read`] / [`super::Store::write`].
pub struct Repo<'c> {
    pub(super) conn: &'c Connection,
}

/// A model read from one row of its table. Columns are read by name, so a
/// `SELECT` that lists [`FromRow::COLUMNS`] (in any order, with more
/// columns or with a table alias) decodes without counting positions.
pub(super) trait FromRow: Sized {
    /// The columns [`FromRow::from_row`] reads, for `SELECT {COLUMNS} FROM …`.
    const COLUMNS: &'static str;

    /// Decodes one row: timestamps and JSON are parsed, and a value that
    /// cannot be is a [`StoreError::Corrupt`].
    fn from_row(row: &Row<'_>) -> Result<Self, StoreError>;
}

impl<'c> Repo<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Repo { conn }
    }
}

impl Repo<'_> {
    /// Runs a statement, parsed once per connection and kept.
    pub(super) fn exec<P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
    ) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(params)
    }

    /// Reads one row with a statement parsed once per connection.
    pub(super) fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.conn.prepare_cached(sql)?.query_row(params, f)
    }

    /// The first row of a query (statement parsed once per connection) as a
    /// model, or `None`.
    pub(super) fn one<T: FromRow, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
    ) -> Result<Option<T>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params)?;
        rows.next()?.map(T::from_row).transpose()
    }
}

/// Every row of a prepared statement as models, in the order returned.
pub(super) fn all<T: FromRow, P: rusqlite::Params>(
    stmt: &mut Statement<'_>,
    params: P,
) -> Result<Vec<T>, StoreError> {
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(T::from_row(row)?);
    }
    Ok(out)
}

/// A required timestamp column.
pub(super) fn ts_col(row: &Row<'_>, col: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_ts(&row.get::<_, String>(col)?)
}

/// A nullable timestamp column.
pub(super) fn opt_ts_col(row: &Row<'_>, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    row.get::<_, Option<String>>(col)?
        .map(|s| parse_ts(&s))
        .transpose()
}

/// A nullable JSON column; `what` names it when it does not parse.
pub(super) fn opt_json_col(
    row: &Row<'_>,
    col: &str,
    what: &'static str,
) -> Result<Option<Value>, StoreError> {
    row.get::<_, Option<String>>(col)?
        .map(|s| json(&s, what))
        .transpose()
}

/// A JSON value's text, for a TEXT column (written straight into a buffer,
/// not through `Display`'s formatter).
pub(crate) fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| v.to_string())
}

pub(super) fn json(s: &str, what: &'static str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        what,
        detail: e.to_string(),
    })
}
