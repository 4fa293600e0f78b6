//! `version`: which version of the application this checkout builds.
//!
//! APP_VERSION from the environment wins (CI passes `<commit>.<build id>`);
//! otherwise it is the abbreviated hash of HEAD, the string
//! `git rev-parse --short HEAD` prints, with `-dirty` appended when tracked
//! files have uncommitted changes (the Makefile labelled such builds with the
//! clean hash, which made two different images share one tag).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use git2::{Commit, DiffOptions, IndexEntry, IndexTime, Repository, RepositoryOpenFlags, StatusOptions};

use crate::ctx::Ctx;

/// Print `{"Version": "<APP_VERSION>"}` on stdout, and nothing else there.
pub fn run(ctx: &Ctx) -> Result<()> {
    ctx.print_result(&json(ctx.version()));
    Ok(())
}

/// The output of `version`, also written to a file by `ci`.
pub fn json(version: &str) -> String {
    // `check_tag` allows no character that JSON would need to escape.
    format!("{{\"Version\": \"{version}\"}}")
}

/// APP_VERSION if it is set and not empty, else the version git gives for `dir`.
pub fn resolve(from_env: Option<&str>, dir: &Path) -> Result<String> {
    match from_env.map(str::trim).filter(|value| !value.is_empty()) {
        Some(value) => {
            check_tag(value).context("APP_VERSION is not usable as an image tag")?;
            Ok(value.to_owned())
        }
        None => from_git(dir),
    }
}

/// The abbreviated hash of HEAD, plus `-dirty` when tracked files changed.
pub fn from_git(dir: &Path) -> Result<String> {
    // libgit2 re-hashes every object it reads to detect a corrupt object
    // store; git itself does not (only `git fsck` does), and for `version`
    // it was a tenth of the instructions. It changes no answer on a sound
    // repository, and this process reads git nowhere else.
    git2::opts::strict_hash_verification(false);
    let repo = Repository::open_ext(dir, RepositoryOpenFlags::FROM_ENV, std::iter::empty::<&str>())
        .map_err(|_| {
            anyhow::anyhow!(
                "{} is not inside a git repository: run from the project's checkout, or set APP_VERSION",
                dir.display()
            )
        })?;
    let head = match repo.head() {
        Ok(head) => head,
        Err(err) if err.code() == git2::ErrorCode::UnbornBranch => {
            bail!("the git repository has no commits yet: commit once, or set APP_VERSION")
        }
        Err(err) => return Err(err).context("cannot read HEAD of the git repository"),
    };
    let commit = head.peel_to_commit().context("HEAD does not point to a commit")?;
    // short_id honours core.abbrev and lengthens the hash until it is unique,
    // exactly like `git rev-parse --short`.
    let short = commit.as_object().short_id().context("cannot abbreviate the hash of HEAD")?;
    let mut version = short.as_str().context("abbreviated hash is not UTF-8")?.to_owned();
    if has_uncommitted_changes(&repo, &commit)? {
        version.push_str("-dirty");
    }
    Ok(version)
}

/// Changes to tracked files, staged or not. Untracked and ignored files do not
/// count: build outputs and editor files must not make every build dirty.
fn has_uncommitted_changes(repo: &Repository, head: &Commit) -> Result<bool> {
    if repo.is_bare() {
        return Ok(false);
    }
    // The quick answer covers the usual clean checkout; whatever it cannot
    // prove clean gets libgit2's full status, so the verdict is always its.
    if proven_clean(repo, head)? {
        return Ok(false);
    }
    let mut options = StatusOptions::new();
    options.include_untracked(false).include_ignored(false).exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options)).context("cannot read git status")?;
    Ok(!statuses.is_empty())
}

/// True when the index matches HEAD's tree and every tracked file's stat data
/// matches the index, by the rule libgit2's status itself applies before it
/// would hash a file (`maybe_modified` in its diff_generate.c): same mode,
/// size, mtime, inode and owner, and not racily clean; ctime is compared too.
/// That costs one lstat per tracked file, where the status walks the whole
/// work tree (every directory listed, .gitignore files read) and re-reads the
/// index: the walk was most of `version`'s time (README, Performance).
/// False means "not proven", never "dirty": conflicts, index flags
/// (assume-unchanged, skip-worktree, intent-to-add), submodules, a staged
/// change or any stat difference (a touched file, a mode change, a deleted
/// file) leave the verdict to the full status.
fn proven_clean(repo: &Repository, head: &Commit) -> Result<bool> {
    let Some(workdir) = repo.workdir() else { return Ok(false) };
    let index = repo.index().context("cannot read the git index")?;
    // Entries not older than the index file are racy: their file may have
    // changed since, in the same instant, keeping its stat data.
    let index_mtime = index.path().and_then(|path| fs::metadata(path).ok()).and_then(|meta| stat_time(&meta, false));
    let Some(index_mtime) = index_mtime else { return Ok(false) };
    // The last directory found real, with all its ancestors: entries come
    // sorted by path, so each directory is checked about once.
    let mut real_dir: &[u8] = b"";
    let entries: Vec<IndexEntry> = index.iter().collect();
    for entry in &entries {
        // Stage bits (conflicts), assume-unchanged, extended flags; gitlinks.
        let special = entry.flags & 0xF000 != 0 || entry.flags_extended != 0 || entry.mode == 0o160000;
        if special || (entry.mtime.seconds(), entry.mtime.nanoseconds()) >= index_mtime {
            return Ok(false);
        }
        let Ok(relative) = std::str::from_utf8(&entry.path) else { return Ok(false) };
        // Every leading component must be a real directory: one replaced by a
        // symlink to a copy of itself is a change the status sees.
        let parent = relative.rfind('/').map_or("", |end| &relative[..end]);
        let mut dir = parent;
        while !dir.is_empty() && !is_dir_or_ancestor(dir.as_bytes(), real_dir) {
            match fs::symlink_metadata(workdir.join(dir)) {
                Ok(meta) if meta.file_type().is_dir() => {}
                _ => return Ok(false),
            }
            dir = dir.rfind('/').map_or("", |end| &dir[..end]);
        }
        real_dir = parent.as_bytes();
        match fs::symlink_metadata(workdir.join(relative)) {
            Ok(meta) if stat_matches(&entry, &meta) => {}
            _ => return Ok(false),
        }
    }
    let tree = head.tree().context("cannot read the tree of HEAD")?;
    // The flags of the status's own HEAD-to-index comparison.
    let mut options = DiffOptions::new();
    options.include_typechange(true).ignore_submodules(true);
    let staged = repo
        .diff_tree_to_index(Some(&tree), Some(&index), Some(&mut options))
        .context("cannot compare HEAD with the git index")?;
    Ok(staged.deltas().len() == 0)
}

/// `dir` is `other` or one of its ancestors (paths with `/` separators).
fn is_dir_or_ancestor(dir: &[u8], other: &[u8]) -> bool {
    other.starts_with(dir) && (other.len() == dir.len() || other[dir.len()] == b'/')
}

/// (seconds, nanoseconds) of a file's mtime or ctime, the seconds cut to 32
/// bits as the index stores them.
#[cfg(unix)]
fn stat_time(meta: &fs::Metadata, ctime: bool) -> Option<(i32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let (seconds, nanoseconds) = if ctime { (meta.ctime(), meta.ctime_nsec()) } else { (meta.mtime(), meta.mtime_nsec()) };
    Some((seconds as i32, u32::try_from(nanoseconds).ok()?))
}

#[cfg(not(unix))]
fn stat_time(_meta: &fs::Metadata, _ctime: bool) -> Option<(i32, u32)> {
    // No inode or owner to compare: the full status decides.
    None
}

/// The file's stat data is what the index recorded, field by field as the
/// index stores them: 32 bits, and git's modes 100644, 100755 or 120000.
#[cfg(unix)]
fn stat_matches(entry: &IndexEntry, meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let mode = match meta.file_type() {
        kind if kind.is_symlink() => 0o120000,
        kind if kind.is_file() && meta.mode() & 0o100 != 0 => 0o100755,
        kind if kind.is_file() => 0o100644,
        _ => return false,
    };
    let recorded = |time: &IndexTime| Some((time.seconds(), time.nanoseconds()));
    entry.mode == mode
        && entry.file_size == meta.size() as u32
        && stat_time(meta, false) == recorded(&entry.mtime)
        && stat_time(meta, true) == recorded(&entry.ctime)
        && entry.ino == meta.ino() as u32
        && entry.uid == meta.uid()
        && entry.gid == meta.gid()
}

#[cfg(not(unix))]
fn stat_matches(_entry: &IndexEntry, _meta: &fs::Metadata) -> bool {
    false
}

/// A Docker tag: up to 128 of `[A-Za-z0-9_.-]`, not starting with `.` or `-`.
pub fn check_tag(tag: &str) -> Result<()> {
    let first_ok = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || tag.len() > 128 {
        bail!(
            "{tag:?}: use up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn repo_with_commit() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        fs::write(dir.path().join("README.md"), "hello\n").unwrap();
        git(dir.path(), &["add", "README.md"]);
        git(dir.path(), &["commit", "-q", "-m", "first"]);
        dir
    }

    #[test]
    fn env_value_wins_over_git() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(Some("1.2.3"), dir.path()).unwrap(), "1.2.3");
        assert_eq!(resolve(Some(" abc.42 "), dir.path()).unwrap(), "abc.42");
    }

    #[test]
    fn env_value_must_be_a_tag() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(Some("1.2 3"), dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("APP_VERSION"), "{err:#}");
        assert!(resolve(Some("-x"), dir.path()).is_err());
        assert!(resolve(Some("a\"b"), dir.path()).is_err());
    }

    #[test]
    fn clean_checkout_gives_git_short_hash() {
        let dir = repo_with_commit();
        let expected = git(dir.path(), &["rev-parse", "--short", "HEAD"]);
        assert_eq!(resolve(None, dir.path()).unwrap(), expected);
        // An empty APP_VERSION counts as unset.
        assert_eq!(resolve(Some(""), dir.path()).unwrap(), expected);
        // Untracked files do not make the build dirty.
        fs::write(dir.path().join("new.txt"), "x").unwrap();
        assert_eq!(resolve(None, dir.path()).unwrap(), expected);
    }

    #[test]
    fn changed_tracked_file_is_dirty() {
        let dir = repo_with_commit();
        let expected = git(dir.path(), &["rev-parse", "--short", "HEAD"]);
        fs::write(dir.path().join("README.md"), "hello\nx\n").unwrap();
        assert_eq!(resolve(None, dir.path()).unwrap(), format!("{expected}-dirty"));
        // Staged counts too.
        git(dir.path(), &["add", "README.md"]);
        assert_eq!(resolve(None, dir.path()).unwrap(), format!("{expected}-dirty"));
    }

    #[test]
    fn subdirectory_finds_the_repository() {
        let dir = repo_with_commit();
        let sub = dir.path().join("a/b");
        fs::create_dir_all(&sub).unwrap();
        let expected = git(dir.path(), &["rev-parse", "--short", "HEAD"]);
        assert_eq!(resolve(None, &sub).unwrap(), expected);
    }

    #[test]
    fn no_repository_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", resolve(None, dir.path()).unwrap_err());
        assert!(err.contains("not inside a git repository"), "{err}");
        assert!(err.contains("APP_VERSION"), "{err}");
    }

    #[test]
    fn no_commits_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        let err = format!("{:#}", resolve(None, dir.path()).unwrap_err());
        assert!(err.contains("no commits"), "{err}");
        assert!(err.contains("APP_VERSION"), "{err}");
    }

    /// Move the tracked files' mtimes into the past and let git refresh the
    /// index, so that no entry is racy and the stat comparison applies.
    fn settle(dir: &Path) {
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
        for path in git(dir, &["ls-files"]).lines() {
            fs::File::options().write(true).open(dir.join(path)).unwrap().set_modified(past).unwrap();
        }
        git(dir, &["update-index", "-q", "--refresh"]);
    }

    fn clean_hash(dir: &Path) -> String {
        git(dir, &["rev-parse", "--short", "HEAD"])
    }

    fn proven(dir: &Path) -> bool {
        let repo = Repository::open(dir).unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        proven_clean(&repo, &head).unwrap()
    }

    #[test]
    fn settled_clean_checkout_is_proven_clean_by_stat_data() {
        let dir = repo_with_commit();
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/file.txt"), "x\n").unwrap();
        git(dir.path(), &["add", "sub/file.txt"]);
        git(dir.path(), &["commit", "-q", "-m", "second"]);
        settle(dir.path());
        assert!(proven(dir.path()));
        assert_eq!(resolve(None, dir.path()).unwrap(), clean_hash(dir.path()));
    }

    #[test]
    fn touched_but_unchanged_file_is_clean() {
        let dir = repo_with_commit();
        settle(dir.path());
        fs::File::options()
            .write(true)
            .open(dir.path().join("README.md"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        // Not provable from stat data: the full status hashes the file.
        assert!(!proven(dir.path()));
        assert_eq!(resolve(None, dir.path()).unwrap(), clean_hash(dir.path()));
    }

    #[cfg(unix)]
    #[test]
    fn mode_change_is_dirty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = repo_with_commit();
        settle(dir.path());
        fs::set_permissions(dir.path().join("README.md"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve(None, dir.path()).unwrap(), format!("{}-dirty", clean_hash(dir.path())));
    }

    #[test]
    fn deleted_tracked_file_is_dirty() {
        let dir = repo_with_commit();
        settle(dir.path());
        fs::remove_file(dir.path().join("README.md")).unwrap();
        assert_eq!(resolve(None, dir.path()).unwrap(), format!("{}-dirty", clean_hash(dir.path())));
    }

    #[test]
    fn staged_only_change_is_dirty() {
        let dir = repo_with_commit();
        fs::write(dir.path().join("README.md"), "hello\nstaged\n").unwrap();
        git(dir.path(), &["add", "README.md"]);
        // The work tree matches the index by stat data; only HEAD differs.
        settle(dir.path());
        assert_eq!(git(dir.path(), &["diff", "--name-only"]), "");
        assert!(!proven(dir.path()));
        assert_eq!(resolve(None, dir.path()).unwrap(), format!("{}-dirty", clean_hash(dir.path())));
    }

    #[cfg(unix)]
    #[test]
    fn directory_replaced_by_a_symlink_is_dirty() {
        let dir = repo_with_commit();
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/file.txt"), "x\n").unwrap();
        git(dir.path(), &["add", "sub/file.txt"]);
        git(dir.path(), &["commit", "-q", "-m", "second"]);
        settle(dir.path());
        // The same file, reached through a symlink: its stat data still matches.
        fs::rename(dir.path().join("sub"), dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.path().join("sub")).unwrap();
        assert!(!proven(dir.path()));
        assert_eq!(resolve(None, dir.path()).unwrap(), format!("{}-dirty", clean_hash(dir.path())));
    }

    #[test]
    fn ancestors_by_whole_components() {
        assert!(is_dir_or_ancestor(b"a", b"a/b"));
        assert!(is_dir_or_ancestor(b"a/b", b"a/b"));
        assert!(!is_dir_or_ancestor(b"a", b"ab/c"));
        assert!(!is_dir_or_ancestor(b"a/b", b"a"));
        assert!(!is_dir_or_ancestor(b"a", b""));
    }

    #[test]
    fn json_is_exact() {
        assert_eq!(json("1.2.3"), r#"{"Version": "1.2.3"}"#);
    }
}
