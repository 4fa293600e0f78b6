//! The migration catalog, the same for both backends: the SQL files in
//! `migrations/` (SQLite) and `migrations/postgres/`, embedded by build.rs
//! (`MIGRATIONS`, `PG_MIGRATIONS`), numbered 1, 2, 3, ... in order; each
//! one's checksum, which the databases record when they apply it; the
//! additive rule (a first line `-- additive`: binaries built before it may
//! keep serving); and what a migrate did and reports, in both backends'
//! words. Applying them is each backend's (`sqlite::migrate`,
//! `postgres::migrate`).

/// One migration: the file name (which starts with its version number) and
/// its SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// The version number from the leading digits of the file name
    /// (`0003_add_x.sql` -> 3), or `None` if the name does not start with one.
    pub fn version(&self) -> Option<u32> {
        let digits: String = self.name.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }

    /// The checksum of this migration's SQL, as recorded in the database.
    pub fn checksum(&self) -> String {
        checksum(self.sql)
    }

    /// A first line of exactly `-- additive` declares that binaries built
    /// before this migration may keep serving on the schema it makes: a new
    /// nullable column, a new table, a new index.
    pub fn additive(&self) -> bool {
        self.sql.lines().next().map(|line| line.trim_end_matches('\r')) == Some(ADDITIVE_MARK)
    }

    /// The name without `.sql`, as reports and backups name it.
    pub fn stem(&self) -> &'static str {
        self.name.strip_suffix(".sql").unwrap_or(self.name)
    }
}

/// The first line that marks a migration additive.
pub const ADDITIVE_MARK: &str = "-- additive";

/// A checksum of a migration's SQL: FNV-1a 64-bit, as 16 hex digits.
///
/// Written out here because the value is stored in databases and compared by
/// later releases: it must never change, which std's `DefaultHasher` does not
/// promise. It only has to notice edits, not resist tampering. Line endings
/// are normalised first so that a checkout with CRLF (git autocrlf) builds a
/// binary that agrees with one built from LF files.
pub fn checksum(sql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sql.replace("\r\n", "\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

// `MIGRATIONS`: every file in `migrations/`, embedded by build.rs.
include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// An applied migration as the database records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub version: u32,
    pub name: String,
    /// Databases migrated before the flag was kept record none: not additive.
    pub additive: bool,
}

/// Why a binary that knows `known` migrations cannot serve `newer`, if it
/// cannot: the first of them that is not additive.
pub fn newer_problem(newer: &[Recorded], known: usize) -> Option<String> {
    let breaking = newer.iter().find(|entry| !entry.additive)?;
    let last = newer.last().map_or(known as u32, |entry| entry.version);
    Some(format!(
        "database schema version {last} is newer than this binary knows ({known}), and migration {} is not additive; run a newer release",
        breaking.name
    ))
}

/// Checks that the list is numbered 1, 2, 3, ... without gaps or repeats, so
/// that "version N" always means "the first N migrations have been applied".
pub fn check_order(migrations: &[Migration]) -> Result<(), String> {
    for (index, migration) in migrations.iter().enumerate() {
        let expected = index + 1;
        match migration.version() {
            Some(v) if v as usize == expected => {}
            Some(v) => {
                return Err(format!(
                    "migration {} has number {v}, expected {expected:04}: migrations must be numbered 1, 2, 3, ... in order",
                    migration.name
                ));
            }
            None => return Err(format!("migration {} does not start with its number (NNNN_name.sql)", migration.name)),
        }
    }
    Ok(())
}

/// Fails with one line when `migration` is not what the database recorded
/// when it applied it (its name and checksum); both backends use this.
pub fn check_applied(migration: &Migration, name: &str, recorded_checksum: &str) -> Result<(), String> {
    let now = migration.checksum();
    let what = if name != migration.name {
        format!("it was applied as {name}")
    } else if recorded_checksum != now {
        format!("checksum {recorded_checksum} when applied, {now} now")
    } else {
        return Ok(());
    };
    Err(format!(
        "migration {} was changed after it was applied to this database ({what}); \
         restore the file and put the change in a new migration instead, \
         or, for a throwaway local database, remove the database (e.g. `cargo xtask clean`)",
        migration.name
    ))
}

/// What `migrate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Migrations applied before their checksums were recorded, whose current
    /// checksums have now been recorded (taken on trust, once).
    pub adopted: Vec<&'static str>,
    /// Migrations applied now.
    pub applied: Vec<&'static str>,
    /// Migrations a newer release applied, all additive (else `migrate`
    /// fails): this binary serves the database as it is.
    pub newer: Vec<String>,
}

/// The database as one binary sees it: `todobackend migrations [--json]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub present: bool,
    pub schema_version: u32,
    /// This binary's migrations: (migration, applied).
    pub migrations: Vec<(Migration, bool)>,
    /// Applied migrations this binary does not know.
    pub unknown_applied: Vec<Recorded>,
    /// Why this binary could not serve the database after its own `migrate`.
    pub problem: Option<String>,
}

impl Report {
    /// One JSON object, the contract deploy's pre-flight reads:
    /// `{"database": "present"|"absent", "schema_version": N,
    ///   "migrations": [{"version", "name", "additive", "applied"}],
    ///   "unknown_applied": [{"version", "name", "additive"}],
    ///   "can_serve": bool, "problem": null | "why not"}`;
    /// names without `.sql`.
    pub fn to_json(&self) -> String {
        let stem = |name: &str| name.strip_suffix(".sql").unwrap_or(name).to_owned();
        let migrations: Vec<serde_json::Value> = self
            .migrations
            .iter()
            .map(|(migration, applied)| {
                serde_json::json!({
                    "version": migration.version(), "name": migration.stem(),
                    "additive": migration.additive(), "applied": applied,
                })
            })
            .collect();
        let unknown: Vec<serde_json::Value> = self
            .unknown_applied
            .iter()
            .map(|entry| serde_json::json!({"version": entry.version, "name": stem(&entry.name), "additive": entry.additive}))
            .collect();
        serde_json::json!({
            "database": if self.present { "present" } else { "absent" },
            "schema_version": self.schema_version,
            "migrations": migrations,
            "unknown_applied": unknown,
            "can_serve": self.problem.is_none(),
            "problem": self.problem,
        })
        .to_string()
    }

    /// The same for a person.
    pub fn table(&self) -> String {
        let mut lines = vec![if self.present {
            format!("database at schema version {}", self.schema_version)
        } else {
            "no database yet".to_owned()
        }];
        for (migration, applied) in &self.migrations {
            let state = if *applied { "applied" } else { "pending" };
            let kind = if migration.additive() { "additive" } else { "" };
            lines.push(format!("  {:<8} {:<8} {}", state, kind, migration.stem()));
        }
        for entry in &self.unknown_applied {
            let kind = if entry.additive { "additive" } else { "" };
            lines.push(format!("  {:<8} {:<8} {} (not known to this binary)", "applied", kind, entry.name));
        }
        match &self.problem {
            Some(problem) => lines.push(format!("this binary cannot serve it: {problem}")),
            None => lines.push("this binary can serve it (after `todobackend migrate`)".to_owned()),
        }
        lines.join("\n")
    }
}
