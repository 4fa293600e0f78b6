//! What the deploy history records of the checkout: the commit it was run
//! from. (The version string itself is `version.rs`'s.)

use std::path::Path;

use git2::{Repository, RepositoryOpenFlags};

/// The full hash of HEAD, or `None` outside a git repository or before the
/// first commit: the history then records no commit rather than failing a
/// deploy.
pub fn head_commit(dir: &Path) -> Option<String> {
    let repo = Repository::open_ext(dir, RepositoryOpenFlags::FROM_ENV, std::iter::empty::<&str>()).ok()?;
    let commit = repo.head().ok()?.peel_to_commit().ok()?;
    Some(commit.id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_repository_means_no_commit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(head_commit(dir.path()), None);
    }

    #[test]
    fn head_is_the_full_hash() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        git(&["init", "-q"]);
        git(&["commit", "-q", "--allow-empty", "-m", "first"]);
        assert_eq!(head_commit(dir.path()), Some(git(&["rev-parse", "HEAD"])));
    }
}
