//! What both backends' backups share: their names
//! (`<schema version>-<UTC timestamp>-before-<migration>` and
//! `<schema version>-<UTC timestamp>-replaced-by-restore`, with `.sqlite3` for
//! SQLite's files), the newest five of each kind kept, and the choice of the
//! one to restore. Taking and restoring them is each backend's
//! (`sqlite::backups`, `postgres::backups`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Backups kept of each kind.
pub const KEPT: usize = 5;

const SUFFIX: &str = ".sqlite3";
pub(crate) const BEFORE: &str = "-before-";
pub(crate) const REPLACED: &str = "-replaced-by-restore";

/// One backup, as its file name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub file: String,
    pub schema_version: u32,
    /// `20261124T013000Z`.
    pub taken: String,
    /// The migration it was taken before, or `None` for a database that a
    /// restore replaced.
    pub before: Option<String>,
}

impl Backup {
    pub fn parse(file: &str) -> Option<Backup> {
        Backup::parse_name(file.strip_suffix(SUFFIX)?, file)
    }

    /// A backup named `stem` (the file name without `.sqlite3`; on
    /// PostgreSQL, the backup's name in its catalog), listed as `file`.
    pub fn parse_name(stem: &str, file: &str) -> Option<Backup> {
        let (version, rest) = stem.split_once('-')?;
        let schema_version = version.parse().ok()?;
        let (taken, before) = match rest.split_once(BEFORE) {
            Some((taken, migration)) if !migration.is_empty() => (taken, Some(migration.to_owned())),
            _ => (rest.strip_suffix(REPLACED)?, None),
        };
        rfc3339(taken).map(|_| Backup { file: file.to_owned(), schema_version, taken: taken.to_owned(), before })
    }

    pub fn kind(&self) -> &'static str {
        if self.before.is_some() { "before-migration" } else { "replaced-by-restore" }
    }

    /// `2026-11-24 01:30:00 UTC`, for messages.
    pub fn taken_text(&self) -> String {
        rfc3339(&self.taken).map(|t| t.replace('T', " ").replace('Z', " UTC")).unwrap_or_else(|| self.taken.clone())
    }
}

pub(crate) fn file_name(schema_version: u32, taken: &str, what: &str) -> String {
    format!("{schema_version}-{taken}{what}{SUFFIX}")
}

/// `20261124T013000Z` for `at`: humantime's RFC 3339 UTC form without its
/// separators (file and schema names stay short and sort by time).
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string().replace(['-', ':'], "")
}

/// The RFC 3339 form of a `timestamp` (`2026-11-24T01:30:00Z`), if it is one.
fn rfc3339(taken: &str) -> Option<String> {
    let shaped = taken.len() == 16 && taken.is_ascii() && taken.ends_with('Z') && taken.as_bytes()[8] == b'T';
    let t = taken.get(0..15).filter(|_| shaped)?;
    let text = format!("{}-{}-{}T{}:{}:{}Z", &t[0..4], &t[4..6], &t[6..8], &t[9..11], &t[11..13], &t[13..15]);
    humantime::parse_rfc3339(&text).ok().map(|_| text)
}

/// The backups in `dir`, newest first (a missing directory has none).
pub fn list(dir: &Path) -> Result<Vec<Backup>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read the backups directory {}: {e}", dir.display())),
    };
    let mut backups: Vec<Backup> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| Backup::parse(&entry.file_name().to_string_lossy()))
        .collect();
    backups
        .sort_by(|a, b| b.taken.cmp(&a.taken).then(b.schema_version.cmp(&a.schema_version)).then(b.file.cmp(&a.file)));
    Ok(backups)
}

/// The backups of `kind` beyond the newest `KEPT` (from a list newest first).
pub fn beyond_kept<'a>(backups: &'a [Backup], kind: &str) -> Vec<&'a Backup> {
    backups.iter().filter(|backup| backup.kind() == kind).skip(KEPT).collect()
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub restored: Backup,
    /// The database the restore replaced, kept as a backup.
    pub kept: PathBuf,
    pub schema_version: u32,
}

/// The newest backup taken before `migration`, or a one-line refusal that
/// names the backups there are. A backup taken before an earlier migration
/// was taken before this one too: one `migrate` that applies 0002 and 0003
/// writes only the backup before 0002, and that is the one to go back to
/// past 0003. Migration names start with their zero-padded number, so their
/// order is the names' order.
pub fn newest_before<'a>(backups: &'a [Backup], migration: &str, dir: &Path) -> Result<&'a Backup, String> {
    let migration = migration.strip_suffix(".sql").unwrap_or(migration);
    backups.iter().find(|backup| backup.before.as_deref().is_some_and(|before| before <= migration)).ok_or_else(|| {
        let there: Vec<&str> = backups.iter().map(|backup| backup.file.as_str()).collect();
        format!(
            "no backup taken before {migration} in {}{}",
            dir.display(),
            if there.is_empty() { " (it holds none)".to_owned() } else { format!(" (it holds: {})", there.join(", ")) }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(timestamp(SystemTime::UNIX_EPOCH), "19700101T000000Z");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(at), "20231114T221320Z");
        // A leap day.
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(timestamp(leap), "20000229T010101Z");
    }

    #[test]
    fn names_say_what_a_backup_is() {
        let before = Backup::parse("1-20261124T013000Z-before-0002_add_note.sqlite3").unwrap();
        assert_eq!((before.schema_version, before.before.as_deref()), (1, Some("0002_add_note")));
        assert_eq!(before.kind(), "before-migration");
        assert_eq!(before.taken_text(), "2026-11-24 01:30:00 UTC");
        let replaced = Backup::parse("3-20261124T013000Z-replaced-by-restore.sqlite3").unwrap();
        assert_eq!((replaced.schema_version, replaced.before), (3, None));
        for other in [
            "todobackend.sqlite3",
            "x-20261124T013000Z-before-a.sqlite3",
            "1-yesterday-before-a.sqlite3",
            // Shaped like a timestamp, but no such day.
            "1-20261324T013000Z-before-a.sqlite3",
            "1-20260230T013000Z-before-a.sqlite3",
            "1-20261124T013000Z-before-.sqlite3",
        ] {
            assert_eq!(Backup::parse(other), None, "{other}");
        }
        assert_eq!(file_name(2, "20261124T013000Z", "-before-0003_x"), "2-20261124T013000Z-before-0003_x.sqlite3");
    }

    #[test]
    fn rotation_keeps_the_newest_five_of_each_kind() {
        let backups: Vec<Backup> = (0..8)
            .rev()
            .map(|i| Backup::parse(&format!("1-2026112{i}T000000Z-before-0002_x.sqlite3")).unwrap())
            .chain([Backup::parse("2-20261101T000000Z-replaced-by-restore.sqlite3").unwrap()])
            .collect();
        let dropped: Vec<&str> = beyond_kept(&backups, "before-migration").iter().map(|b| b.taken.as_str()).collect();
        assert_eq!(dropped, ["20261122T000000Z", "20261121T000000Z", "20261120T000000Z"]);
        assert!(beyond_kept(&backups, "replaced-by-restore").is_empty());
    }

    #[test]
    fn the_newest_backup_before_a_migration_is_chosen_or_the_refusal_lists_them() {
        let backups = vec![
            Backup::parse("2-20261124T020000Z-before-0003_y.sqlite3").unwrap(),
            Backup::parse("1-20261124T010000Z-before-0002_x.sqlite3").unwrap(),
            Backup::parse("1-20261123T010000Z-before-0002_x.sqlite3").unwrap(),
        ];
        assert_eq!(newest_before(&backups, "0002_x.sql", Path::new("/b")).unwrap().taken, "20261124T010000Z");
        // Past a later migration: the newest backup from before it.
        assert_eq!(newest_before(&backups, "0004_z", Path::new("/b")).unwrap().taken, "20261124T020000Z");
        let replaced = [Backup::parse("2-20261124T030000Z-replaced-by-restore.sqlite3").unwrap()];
        let backups: Vec<Backup> = replaced.into_iter().chain(backups).collect();
        assert_eq!(newest_before(&backups, "0003_y", Path::new("/b")).unwrap().taken, "20261124T020000Z");
        let err = newest_before(&backups, "0001_init", Path::new("/b")).unwrap_err();
        assert!(err.contains("0001_init") && err.contains("2-20261124T020000Z-before-0003_y.sqlite3"), "{err}");
    }
}
