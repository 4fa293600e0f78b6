//! Migrations on PostgreSQL, with the rules of the SQLite side
//! (`sqlite::migrate`): versions numbered 1, 2, 3, ...; each applied
//! migration's name, checksum and `-- additive` flag recorded in
//! `schema_migrations`; an edited applied migration refused; a schema made
//! newer only by additive migrations served by older binaries.
//!
//! The version is the highest recorded one (PostgreSQL has no
//! `user_version`); rows are only ever added in order, in the transaction
//! that applies them. All pending migrations and their records run in one
//! transaction (PostgreSQL's DDL is transactional), so a failing one leaves
//! nothing applied. Concurrent `migrate` runs (one per node) are serialised
//! by a session advisory lock, and the second finds nothing left to do.

use crate::store::catalog::{self, Migration, Outcome, Recorded, Report};
use crate::store::postgres::backups;
use crate::store::postgres::client::Conn;
use crate::store::postgres::config::Target;
use crate::store::postgres::schema::{Applied, applied, current_version, lock};
use crate::store::todos::StoreError;

const CREATE_RECORD_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version  INTEGER PRIMARY KEY,
    name     TEXT    NOT NULL,
    checksum TEXT    NOT NULL,
    additive BOOLEAN NOT NULL DEFAULT false
)";

/// `cannot ... database postgres://...: why` for errors that leave the process.
pub fn context(target: &Target) -> impl Fn(StoreError) -> String + '_ {
    move |e| match e {
        StoreError::Unavailable(why) | StoreError::Failed(why) => format!("database {}: {why}", target.display()),
    }
}

fn newer(applied: &[Applied], known: usize) -> Vec<Recorded> {
    applied
        .iter()
        .filter(|entry| entry.version as usize > known)
        .map(|entry| Recorded { version: entry.version, name: entry.name.clone(), additive: entry.additive })
        .collect()
}

/// The pending migrations, after checking what was applied: refuses an
/// applied migration changed since, and a newer schema that is not
/// additive (naming the migration).
pub fn pending<'a>(applied: &[Applied], list: &'a [Migration]) -> Result<&'a [Migration], String> {
    for (migration, entry) in list.iter().zip(applied) {
        catalog::check_applied(migration, &entry.name, &entry.checksum)?;
    }
    let current = current_version(applied) as usize;
    if current > list.len() {
        if let Some(problem) = catalog::newer_problem(&newer(applied, list.len()), list.len()) {
            return Err(problem);
        }
        return Ok(&[]);
    }
    Ok(&list[current..])
}

/// `serve`'s check: every migration applied, none changed.
pub fn ensure_migrated(conn: &Conn, target: &Target, list: &[Migration]) -> Result<(), String> {
    let refuse = |why: String| format!("refusing to start: database {}: {why}", target.display());
    let applied = applied(conn).map_err(|e| refuse(e.to_string()))?.unwrap_or_default();
    let pending = pending(&applied, list).map_err(refuse)?;
    if !pending.is_empty() {
        let names: Vec<&str> = pending.iter().map(|m| m.name).collect();
        return Err(format!(
            "refusing to start: database {} has {} pending migration(s) ({}); run `todobackend migrate` first",
            target.display(),
            pending.len(),
            names.join(", ")
        ));
    }
    Ok(())
}

/// `migrations [--json]` on PostgreSQL: read only.
pub fn report(target: &Target, list: &[Migration]) -> Result<Report, String> {
    let conn = Conn::connect(target).map_err(|e| e.to_string())?;
    let applied = applied(&conn).map_err(context(target))?;
    let mut report = Report {
        present: applied.is_some(),
        schema_version: 0,
        migrations: list.iter().map(|migration| (*migration, false)).collect(),
        unknown_applied: Vec::new(),
        problem: None,
    };
    let Some(applied) = applied else { return Ok(report) };
    report.schema_version = current_version(&applied);
    for (index, (_, is_applied)) in report.migrations.iter_mut().enumerate() {
        *is_applied = index < report.schema_version as usize;
    }
    report.unknown_applied = newer(&applied, list.len());
    report.problem = pending(&applied, list).err();
    Ok(report)
}

/// What `migrate` did, and the version it left.
pub struct Migrated {
    pub outcome: Outcome,
    pub version: u32,
    /// The backup taken before applying, if one was.
    pub backup: Option<String>,
}

/// `migrate` on PostgreSQL: under the advisory lock, checks, backs up a
/// database that has a schema (a failed backup applies nothing), then
/// applies every pending migration in one transaction.
pub fn migrate(conn: &Conn, target: &Target, list: &[Migration]) -> Result<Migrated, String> {
    let ctx = context(target);
    catalog::check_order(list)?;
    let _lock = lock(conn).map_err(&ctx)?;
    let applied = applied(conn).map_err(&ctx)?.unwrap_or_default();
    let todo = pending(&applied, list)?;
    let current = current_version(&applied);
    let mut migrated = Migrated {
        outcome: Outcome {
            newer: newer(&applied, list.len()).into_iter().map(|e| e.name).collect(),
            ..Outcome::default()
        },
        version: current,
        backup: None,
    };
    if todo.is_empty() {
        return Ok(migrated);
    }
    if current > 0 {
        let name = backups::before_migration(conn, current, todo[0].stem())
            .map_err(|e| format!("{}; no migration was applied", ctx(e)))?;
        migrated.backup = Some(name);
    }
    conn.batch("BEGIN").map_err(&ctx)?;
    let applied_now = apply_in_transaction(conn, todo);
    match applied_now {
        Ok(names) => {
            conn.batch("COMMIT").map_err(|e| format!("cannot commit the migrations: {}", ctx(e)))?;
            migrated.outcome.applied = names;
            migrated.version = list.len() as u32;
            Ok(migrated)
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

fn apply_in_transaction(conn: &Conn, todo: &[Migration]) -> Result<Vec<&'static str>, String> {
    conn.batch(CREATE_RECORD_TABLE)
        .map_err(|e| format!("cannot create the schema_migrations table: {}", message(&e)))?;
    let mut names = Vec::new();
    for migration in todo {
        conn.batch(migration.sql).map_err(|e| format!("migration {} failed: {}", migration.name, message(&e)))?;
        let version = migration.version().map_or(0, |v| v as i32); // checked by check_order
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum, additive) VALUES ($1, $2, $3, $4)",
            &[&version, &migration.name, &migration.checksum(), &migration.additive()],
        )
        .map_err(|e| format!("cannot record migration {}: {}", migration.name, message(&e)))?;
        names.push(migration.name);
    }
    Ok(names)
}

fn message(e: &StoreError) -> &str {
    match e {
        StoreError::Unavailable(why) | StoreError::Failed(why) => why,
    }
}
