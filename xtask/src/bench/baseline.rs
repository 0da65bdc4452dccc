//! The bare-SQLite baseline: the same rows inserted into a plain table through the
//! product's own diesel + bundled SQLite, with the product's pragmas (WAL,
//! synchronous=NORMAL, …) and its `BEGIN IMMEDIATE` transactions, in this process.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::SqliteConnection;

diesel::table! {
    bench_rows (pos) {
        pos -> BigInt,
        entity_type -> Text,
        entity_id -> Text,
        doc -> Text,
    }
}

/// Opens a fresh database with the bench table: a plain rowid table, or (`keyed`) one
/// keyed by (type, id) like the product's `entities` table.
fn open(dir: &Path, keyed: bool) -> Result<SqliteConnection> {
    let path = dir.join("baseline.db");
    let url = path.to_str().context("temp path is not UTF-8")?;
    let mut conn = SqliteConnection::establish(url)?;
    conn.batch_execute("PRAGMA busy_timeout = 5000;")?;
    conn.batch_execute(tillmesh_store_sqlite::CONNECTION_PRAGMAS)?;
    conn.batch_execute(if keyed {
        "CREATE TABLE bench_rows (pos INTEGER NOT NULL, entity_type TEXT NOT NULL, \
         entity_id TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (entity_type, entity_id)) WITHOUT ROWID;"
    } else {
        "CREATE TABLE bench_rows (pos INTEGER PRIMARY KEY, entity_type TEXT NOT NULL, \
         entity_id TEXT NOT NULL, doc TEXT NOT NULL);"
    })?;
    Ok(conn)
}

fn insert_one(conn: &mut SqliteConnection, row: &(String, String, String), pos: i64) -> QueryResult<usize> {
    diesel::insert_into(bench_rows::table)
        .values((
            bench_rows::pos.eq(pos),
            bench_rows::entity_type.eq(&row.0),
            bench_rows::entity_id.eq(&row.1),
            bench_rows::doc.eq(&row.2),
        ))
        .execute(conn)
}

/// Inserts `rows` as single-row INSERTs into the plain table, `per_tx` per
/// transaction. Returns rows/s.
pub(crate) fn insert_rate(rows: &[(String, String, String)], per_tx: usize) -> Result<f64> {
    insert_rate_into(rows, per_tx, false)
}

/// As [`insert_rate`], into a table keyed by (type, id) (`WITHOUT ROWID`).
pub(crate) fn insert_rate_keyed(rows: &[(String, String, String)], per_tx: usize) -> Result<f64> {
    insert_rate_into(rows, per_tx, true)
}

fn insert_rate_into(rows: &[(String, String, String)], per_tx: usize, keyed: bool) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut conn = open(dir.path(), keyed)?;
    let t = Instant::now();
    let mut pos = 0;
    for chunk in rows.chunks(per_tx.max(1)) {
        conn.immediate_transaction(|c| {
            for row in chunk {
                pos += 1;
                insert_one(c, row, pos)?;
            }
            QueryResult::Ok(())
        })?;
    }
    Ok(rows.len() as f64 / t.elapsed().as_secs_f64())
}

/// One row per transaction for up to `limit` (or until the rows run out). Returns
/// (transactions/s, latencies in µs).
pub(crate) fn single_row_transactions(rows: &[(String, String, String)], limit: Duration) -> Result<(f64, Vec<u64>)> {
    let dir = tempfile::tempdir()?;
    let mut conn = open(dir.path(), false)?;
    let mut lat = Vec::with_capacity(rows.len());
    let t = Instant::now();
    for (pos, row) in (1..).zip(rows) {
        let t1 = Instant::now();
        conn.immediate_transaction(|c| insert_one(c, row, pos))?;
        lat.push(t1.elapsed().as_micros() as u64);
        if t.elapsed() > limit {
            break;
        }
    }
    Ok((lat.len() as f64 / t.elapsed().as_secs_f64(), lat))
}
