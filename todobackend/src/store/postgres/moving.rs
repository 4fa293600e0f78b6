//! `move-to-postgres --from FILE`: every row of a SQLite database into an
//! empty PostgreSQL database. The target is migrated first (so its schema is
//! this release's), must hold no rows, and gets the rows in one transaction
//! with their ids; the identity sequences then continue after the highest id
//! SQLite ever gave (its `sqlite_sequence`, so deleted ids stay unused), and
//! the row counts of both sides must agree before it commits. Every app
//! table moves, `idempotency_keys` too: a keyed POST repeated after the move
//! is answered as before it.
//!
//! Values PostgreSQL cannot store are found before anything moves: text
//! holding U+0000 or bytes that are not UTF-8 (SQLite stores both in a TEXT
//! column) before the target is even connected to, and values that do not
//! fit their PostgreSQL column's type (SQLite's columns take any type) in the
//! transaction before the first row is inserted. Each is named by table, row
//! and column, so that it can be corrected in SQLite and the move run again.

use std::path::Path;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::{ToSql, Type};

use crate::store::catalog::Migration;
use crate::store::postgres::backups::ident;
use crate::store::postgres::client::Conn;
use crate::store::postgres::config::Target;
use crate::store::postgres::{migrate, schema};
use crate::store::sqlite::migrate as sqlite_migrate;
use crate::store::todos::StoreError;

/// Rows moved, per table.
#[derive(Debug, PartialEq, Eq)]
pub struct Moved {
    pub tables: Vec<(String, i64)>,
}

/// Offending values listed in the error; past it, only counted.
const MAX_LISTED: usize = 20;

/// Why PostgreSQL cannot store this SQLite text in any text column, if it
/// cannot: it refuses U+0000 and bytes that are not UTF-8.
fn text_problem(bytes: &[u8]) -> Option<String> {
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Some(format!("text holds U+0000 (NUL) at byte {at}, which PostgreSQL text cannot store"));
    }
    std::str::from_utf8(bytes)
        .err()
        .map(|e| format!("text is not UTF-8 (at byte {}), which PostgreSQL text cannot store", e.valid_up_to()))
}

/// A SQLite value as the PostgreSQL column's type wants it; the error says
/// why it cannot be.
fn convert(value: ValueRef<'_>, ty: &Type) -> Result<Box<dyn ToSql + Sync + Send>, String> {
    let mismatch = || {
        let shown = match value {
            // The bytes themselves may be what is wrong with them.
            ValueRef::Text(bytes) => format!("text of {} byte(s)", bytes.len()),
            ValueRef::Blob(bytes) => format!("blob of {} byte(s)", bytes.len()),
            other => format!("{other:?}"),
        };
        format!("a SQLite {shown} does not fit PostgreSQL type {ty}")
    };
    Ok(match value {
        ValueRef::Null => match *ty {
            Type::INT8 => Box::new(None::<i64>),
            Type::INT4 => Box::new(None::<i32>),
            Type::INT2 => Box::new(None::<i16>),
            Type::BOOL => Box::new(None::<bool>),
            Type::FLOAT8 => Box::new(None::<f64>),
            Type::FLOAT4 => Box::new(None::<f32>),
            Type::BYTEA => Box::new(None::<Vec<u8>>),
            _ => Box::new(None::<String>),
        },
        ValueRef::Integer(i) => match *ty {
            Type::INT8 => Box::new(i),
            Type::INT4 => Box::new(i32::try_from(i).map_err(|_| mismatch())?),
            Type::INT2 => Box::new(i16::try_from(i).map_err(|_| mismatch())?),
            Type::BOOL if i == 0 || i == 1 => Box::new(i == 1),
            Type::FLOAT8 => Box::new(i as f64),
            _ => return Err(mismatch()),
        },
        ValueRef::Real(f) => match *ty {
            Type::FLOAT8 => Box::new(f),
            Type::FLOAT4 => Box::new(f as f32),
            _ => return Err(mismatch()),
        },
        ValueRef::Text(bytes) => match *ty {
            Type::TEXT | Type::VARCHAR | Type::BPCHAR => match text_problem(bytes) {
                Some(problem) => return Err(problem),
                None => Box::new(String::from_utf8_lossy(bytes).into_owned()),
            },
            _ => return Err(mismatch()),
        },
        ValueRef::Blob(bytes) => match *ty {
            Type::BYTEA => Box::new(bytes.to_vec()),
            _ => return Err(mismatch()),
        },
    })
}

fn sqlite_error(path: &Path) -> impl Fn(rusqlite::Error) -> String + '_ {
    move |e| format!("database {}: {e}", path.display())
}

/// The app's tables in the SQLite database (not its bookkeeping).
fn sqlite_tables(conn: &Connection, path: &Path) -> Result<Vec<String>, String> {
    let mut statement = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name <> 'schema_migrations' ORDER BY name",
        )
        .map_err(sqlite_error(path))?;
    let names = statement.query_map([], |row| row.get::<_, String>(0)).map_err(sqlite_error(path))?;
    names.collect::<Result<Vec<_>, _>>().map_err(sqlite_error(path))
}

/// A table's columns in SQLite, in order.
fn sqlite_columns(source: &Connection, from: &Path, table: &str) -> Result<Vec<String>, String> {
    let mut info = source
        .prepare(&format!("SELECT name FROM pragma_table_info('{}')", table.replace('\'', "''")))
        .map_err(sqlite_error(from))?;
    let names = info.query_map([], |row| row.get::<_, String>(0)).map_err(sqlite_error(from))?;
    names.collect::<Result<Vec<_>, _>>().map_err(sqlite_error(from))
}

/// How a row is named in errors: by the column that is SQLite's rowid
/// (`todos id 3`), else by the rowid itself (`rowid 3`).
fn row_name(source: &Connection, from: &Path, table: &str) -> Result<String, String> {
    let keys: Vec<(String, String)> = {
        let mut info = source
            .prepare(&format!(
                "SELECT name, upper(type) FROM pragma_table_info('{}') WHERE pk > 0",
                table.replace('\'', "''")
            ))
            .map_err(sqlite_error(from))?;
        let keys = info.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).map_err(sqlite_error(from))?;
        keys.collect::<Result<_, _>>().map_err(sqlite_error(from))?
    };
    Ok(match keys.as_slice() {
        [(name, ty)] if ty == "INTEGER" => name.clone(),
        _ => "rowid".to_string(),
    })
}

/// The values found that PostgreSQL cannot store: the first `MAX_LISTED`,
/// one line each, and how many in all.
#[derive(Default)]
struct Unstorable {
    listed: Vec<String>,
    total: usize,
}

impl Unstorable {
    fn add(&mut self, table: &str, row: &str, rowid: i64, column: &str, why: &str) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(format!("table {table}, row {row} {rowid}, column {column}: {why}"));
        }
    }

    /// The error for what was found, if anything was.
    fn refusal(&self, from: &Path) -> Result<(), String> {
        if self.total == 0 {
            return Ok(());
        }
        let more = self.total - self.listed.len();
        let mut message = format!(
            "refusing to move: {} value(s) in {} cannot be stored by PostgreSQL, so nothing was moved; \
             correct or delete them in SQLite (e.g. with sqlite3) and run move-to-postgres again:",
            self.total,
            from.display()
        );
        for line in &self.listed {
            message.push_str("\n  ");
            message.push_str(line);
        }
        if more > 0 {
            message.push_str(&format!("\n  and {more} more"));
        }
        Err(message)
    }
}

/// Scans every row of `table` for values PostgreSQL cannot store: text it
/// refuses in any column, and, given the target's column types (in the
/// order of `columns`), values that do not fit their column.
fn find_unstorable(
    source: &Connection,
    from: &Path,
    table: &str,
    columns: &[String],
    types: Option<&[Type]>,
    found: &mut Unstorable,
) -> Result<(), String> {
    let row = row_name(source, from, table)?;
    let list = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
    let mut select =
        source.prepare(&format!("SELECT rowid, {list} FROM {}", ident(table))).map_err(sqlite_error(from))?;
    let mut rows = select.query([]).map_err(sqlite_error(from))?;
    while let Some(values) = rows.next().map_err(sqlite_error(from))? {
        let rowid: i64 = values.get(0).map_err(sqlite_error(from))?;
        for (index, column) in columns.iter().enumerate() {
            let value = values.get_ref(index + 1).map_err(sqlite_error(from))?;
            let problem = match (types, value) {
                (Some(types), value) => convert(value, &types[index]).err(),
                (None, ValueRef::Text(bytes)) => text_problem(bytes),
                (None, _) => None,
            };
            if let Some(why) = problem {
                found.add(table, &row, rowid, column, &why);
            }
        }
    }
    Ok(())
}

fn count_rows(conn: &Conn, table: &str) -> Result<i64, StoreError> {
    Ok(conn.query_one(&format!("SELECT count(*) FROM {}", ident(table)), &[])?.get(0))
}

/// Moves the rows of the SQLite database at `from` into `target`.
pub fn run(from: &Path, target: &Target, sqlite_list: &[Migration], pg_list: &[Migration]) -> Result<Moved, String> {
    if !from.exists() {
        return Err(format!("the SQLite database {} does not exist; pass the file with --from", from.display()));
    }
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite_error(from))?;
    let pending =
        sqlite_migrate::pending(&source, sqlite_list).map_err(|e| format!("database {}: {e}", from.display()))?;
    let version = sqlite_migrate::current_version(&source)? as usize;
    if !pending.is_empty() || version != sqlite_list.len() {
        return Err(format!(
            "the SQLite database {} is at schema version {version}, this release's is {}; move it with the release that migrated it, after `todobackend migrate --db {}`",
            from.display(),
            sqlite_list.len(),
            from.display()
        ));
    }
    let tables = sqlite_tables(&source, from)?;
    // Text PostgreSQL refuses whatever the column: found before the target
    // is touched at all.
    let mut unstorable = Unstorable::default();
    for table in &tables {
        find_unstorable(&source, from, table, &sqlite_columns(&source, from, table)?, None, &mut unstorable)?;
    }
    unstorable.refusal(from)?;
    let ctx = migrate::context(target);
    let conn = Conn::connect(target).map_err(|e| e.to_string())?;
    // Refuse before touching anything when there is something to lose.
    let _lock = schema::lock(&conn).map_err(&ctx)?;
    for table in &tables {
        let exists: bool = conn.query_one("SELECT to_regclass($1) IS NOT NULL", &[&ident(table)]).map_err(&ctx)?.get(0);
        if exists {
            let rows = count_rows(&conn, table).map_err(&ctx)?;
            if rows > 0 {
                return Err(format!(
                    "refusing to move: the PostgreSQL database {} already holds {rows} row(s) in {table}; move into an empty database",
                    target.display()
                ));
            }
        }
    }
    drop(_lock);
    crate::say!("moving every row of {} into {}", from.display(), target.display());
    let migrated = migrate::migrate(&conn, target, pg_list)?;
    for name in &migrated.outcome.applied {
        crate::say!("applied migration {name} to {}", target.display());
    }
    let _lock = schema::lock(&conn).map_err(&ctx)?;
    conn.batch("BEGIN").map_err(&ctx)?;
    match copy(&source, from, &conn, &tables) {
        Ok(moved) => {
            conn.batch("COMMIT").map_err(&ctx)?;
            Ok(moved)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(if e.contains("nothing was moved") { e } else { format!("{e}; nothing was moved") })
        }
    }
}

/// A table's copy: its SQLite columns and the INSERT that takes them.
struct Plan {
    table: String,
    columns: Vec<String>,
    insert: tokio_postgres::Statement,
}

fn copy(source: &Connection, from: &Path, conn: &Conn, tables: &[String]) -> Result<Moved, String> {
    let pg = |e: StoreError| e.to_string();
    // Every table's values against its PostgreSQL column types, before the
    // first row is inserted.
    let mut plans = Vec::with_capacity(tables.len());
    let mut unstorable = Unstorable::default();
    for table in tables {
        // Emptiness again, inside the transaction and under its lock.
        conn.batch(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", ident(table))).map_err(pg)?;
        if count_rows(conn, table).map_err(pg)? > 0 {
            return Err(format!("refusing to move: {table} is no longer empty"));
        }
        let columns = sqlite_columns(source, from, table)?;
        let list = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let placeholders = (1..=columns.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let insert = format!("INSERT INTO {} ({list}) OVERRIDING SYSTEM VALUE VALUES ({placeholders})", ident(table));
        let insert = conn.prepare(&insert).map_err(pg)?;
        find_unstorable(source, from, table, &columns, Some(insert.params()), &mut unstorable)?;
        plans.push(Plan { table: table.clone(), columns, insert });
    }
    unstorable.refusal(from)?;

    let mut moved = Moved { tables: Vec::new() };
    for Plan { table, columns, insert: statement } in &plans {
        let types = statement.params();
        let list = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let mut select = source.prepare(&format!("SELECT {list} FROM {}", ident(table))).map_err(sqlite_error(from))?;
        let mut rows = select.query([]).map_err(sqlite_error(from))?;
        let mut count = 0i64;
        while let Some(row) = rows.next().map_err(sqlite_error(from))? {
            let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::with_capacity(columns.len());
            for (index, (column, ty)) in columns.iter().zip(types).enumerate() {
                let value = row.get_ref(index).map_err(sqlite_error(from))?;
                // Checked above; a value changed since (the file is not
                // locked) still stops the move.
                values.push(convert(value, ty).map_err(|why| format!("table {table}, column {column}: {why}"))?);
            }
            let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref() as &(dyn ToSql + Sync)).collect();
            conn.execute_statement(statement, &params).map_err(pg)?;
            count += 1;
        }
        let sqlite_count: i64 = source
            .query_row(&format!("SELECT count(*) FROM {}", ident(table)), [], |row| row.get(0))
            .map_err(sqlite_error(from))?;
        let pg_count = count_rows(conn, table).map_err(pg)?;
        if sqlite_count != pg_count || count != pg_count {
            return Err(format!("{table}: {sqlite_count} row(s) in SQLite, {pg_count} in PostgreSQL after the copy"));
        }
        reset_sequences(source, from, conn, table)?;
        moved.tables.push((table.clone(), pg_count));
    }
    Ok(moved)
}

/// Each identity column continues after the highest value SQLite gave out
/// (its AUTOINCREMENT counter when it kept one, else the highest row).
fn reset_sequences(source: &Connection, from: &Path, conn: &Conn, table: &str) -> Result<(), String> {
    let pg = |e: StoreError| e.to_string();
    let identity = conn
        .query(
            "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON a.attrelid = c.oid \
             WHERE c.oid = to_regclass($1) AND a.attidentity <> '' AND NOT a.attisdropped",
            &[&ident(table)],
        )
        .map_err(pg)?;
    let has_counters: bool = source
        .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_sequence'", [], |row| row.get::<_, i64>(0))
        .map(|n| n > 0)
        .map_err(sqlite_error(from))?;
    for column in identity {
        let column: String = column.get(0);
        let counter: i64 = if has_counters {
            source
                .query_row("SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1", [table], |row| {
                    row.get(0)
                })
                .map_err(sqlite_error(from))?
        } else {
            0
        };
        let highest: i64 = conn
            .query_one(&format!("SELECT coalesce(max({}), 0)::bigint FROM {}", ident(&column), ident(table)), &[])
            .map_err(pg)?
            .get(0);
        let next_after = counter.max(highest);
        let sequence: Option<String> =
            conn.query_one("SELECT pg_get_serial_sequence($1, $2)", &[&ident(table), &column]).map_err(pg)?.get(0);
        if let Some(sequence) = sequence {
            // setval(.., 0) is refused: an empty table starts at 1.
            let (value, called) = if next_after > 0 { (next_after, true) } else { (1, false) };
            conn.query_one("SELECT setval($1::text::regclass, $2, $3)", &[&sequence, &value, &called]).map_err(pg)?;
        }
    }
    Ok(())
}
