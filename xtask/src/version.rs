//! `version`: which version of the application this checkout builds.
//!
//! APP_VERSION from the environment wins (CI passes `<commit>.<build id>`);
//! otherwise it is the abbreviated hash of HEAD, the string
//! `git rev-parse --short HEAD` prints, with `-dirty` appended when tracked
//! files have uncommitted changes (the Makefile labelled such builds with the
//! clean hash, which made two different images share one tag).

use std::path::Path;

use anyhow::{Context, Result, bail};
use git2::{Commit, Repository, RepositoryOpenFlags, StatusOptions};

use crate::ctx::Printer;

mod stat_check;

/// Print `{"Version": "<version>"}` on stdout, and nothing else there.
pub fn run(printer: Printer, version: &str) -> Result<()> {
    printer.print_result(&json(version));
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
    let repo = Repository::open_ext(dir, RepositoryOpenFlags::FROM_ENV, std::iter::empty::<&str>()).map_err(|err| {
        // libgit2 (without its experimental SHA-256 support) refuses a SHA-256
        // repository: "unknown object format 'sha256'".
        if err.message().contains("object format") {
            return anyhow::anyhow!(
                "{} is in a SHA-256 git repository, which this xtask's git library does not support: set \
                 APP_VERSION (e.g. APP_VERSION=$(git rev-parse --short=12 HEAD))",
                dir.display()
            );
        }
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
    if stat_check::proven_clean(repo, head) {
        return Ok(false);
    }
    let mut options = StatusOptions::new();
    options.include_untracked(false).include_ignored(false).exclude_submodules(true);
    let statuses = repo.statuses(Some(&mut options)).context("cannot read git status")?;
    Ok(!statuses.is_empty())
}

/// A version: a Docker tag (up to 128 of `[A-Za-z0-9_.-]`, not starting with
/// `.` or `-`) that leaves room for its SBOM image's tag, and is not one: a
/// `<version>.sbom` tag holds a version's SBOM (sbom.rs), never a release,
/// so no deploy, rollback or publish may take it for one.
pub fn check_tag(tag: &str) -> Result<()> {
    let first_ok = tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let longest = 128 - crate::sbom::TAG_SUFFIX.len();
    if !first_ok || !rest_ok || tag.len() > longest {
        bail!("{tag:?}: use up to {longest} letters, digits, '_', '.' or '-', not starting with '.' or '-'");
    }
    if tag.ends_with(crate::sbom::TAG_SUFFIX) {
        bail!(
            "{tag:?} names a version's SBOM image, not a release: use the version itself (without `{}`)",
            crate::sbom::TAG_SUFFIX
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
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
        // An SBOM image's tag is never a version.
        let err = resolve(Some("abc1234.7.sbom"), dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("SBOM"), "{err:#}");
        assert!(resolve(Some("abc1234.7.sbom2"), dir.path()).is_ok());
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
    fn a_sha256_repository_is_said_to_be_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let made = std::process::Command::new("git")
            .args(["init", "--quiet", "--object-format=sha256"])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(made.success(), "git init --object-format=sha256");
        let err = format!("{:#}", resolve(None, dir.path()).unwrap_err());
        assert!(err.contains("SHA-256") && err.contains("APP_VERSION"), "{err}");
        assert!(!err.contains("not inside a git repository"), "{err}");
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

    /// A second commit adds `sub/file.txt`; the checkout is settled, so its
    /// stat data alone can prove it clean.
    fn repo_with_a_file_in_a_folder() -> tempfile::TempDir {
        let dir = repo_with_commit();
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/file.txt"), "x\n").unwrap();
        git(dir.path(), &["add", "sub/file.txt"]);
        git(dir.path(), &["commit", "-q", "-m", "second"]);
        settle(dir.path());
        dir
    }

    fn proven(dir: &Path) -> bool {
        let repo = Repository::open(dir).unwrap();
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        stat_check::proven_clean(&repo, &head)
    }

    #[test]
    fn settled_clean_checkout_is_proven_clean_by_stat_data() {
        let dir = repo_with_a_file_in_a_folder();
        assert!(proven(dir.path()));
        assert_eq!(resolve(None, dir.path()).unwrap(), clean_hash(dir.path()));
    }

    #[test]
    fn index_equal_to_head_without_a_cache_tree_is_proven_clean() {
        let dir = repo_with_commit();
        // Staging a change and then the original again leaves the index equal
        // to HEAD with its cache tree invalidated: the tree comparison decides.
        fs::write(dir.path().join("README.md"), "changed\n").unwrap();
        git(dir.path(), &["add", "README.md"]);
        fs::write(dir.path().join("README.md"), "hello\n").unwrap();
        git(dir.path(), &["add", "README.md"]);
        settle(dir.path());
        assert!(proven(dir.path()));
        assert_eq!(resolve(None, dir.path()).unwrap(), clean_hash(dir.path()));
    }

    #[test]
    fn linked_worktree_is_proven_clean_and_sees_its_own_changes() {
        let dir = repo_with_commit();
        let linked = dir.path().join("linked");
        git(dir.path(), &["worktree", "add", "-q", "-b", "other", linked.to_str().unwrap()]);
        settle(&linked);
        assert!(proven(&linked));
        assert_eq!(resolve(None, &linked).unwrap(), clean_hash(&linked));
        fs::write(linked.join("README.md"), "other\n").unwrap();
        assert_eq!(resolve(None, &linked).unwrap(), format!("{}-dirty", clean_hash(&linked)));
        // The main checkout's index is its own.
        settle(dir.path());
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
        let dir = repo_with_a_file_in_a_folder();
        // The same file, reached through a symlink: its stat data still matches.
        fs::rename(dir.path().join("sub"), dir.path().join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("elsewhere", dir.path().join("sub")).unwrap();
        assert!(!proven(dir.path()));
        assert_eq!(resolve(None, dir.path()).unwrap(), format!("{}-dirty", clean_hash(dir.path())));
    }

    #[test]
    fn json_is_exact() {
        assert_eq!(json("1.2.3"), r#"{"Version": "1.2.3"}"#);
    }
}
