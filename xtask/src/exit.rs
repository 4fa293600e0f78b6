//! What the exit code of `cargo xtask` says, so that a pipeline can tell
//! "retry later" from "broken". A failure that means more than "it failed"
//! carries its [`Exit`] inside the `anyhow::Error` (see [`Exit::error`] and
//! [`Exit::wrap`]), where it is made; both binaries' `main` find it with
//! [`code_of`]. The table is `cargo xtask --help`'s; [`of_task`] is each
//! task's, in its `--help` and its page of the command reference
//! (`cargo xtask docs`), so that neither can drift from these codes.

use std::fmt;

/// The kinds of failure that have their own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Anything else that failed: 1.
    Failure,
    /// The command line does not parse: 2, as clap and most tools exit.
    Usage,
    /// The stack changed but the new version is not live: it did not
    /// converge in time, the swarm rolled it back, or a job failed (the
    /// version that served still serves); `status`: not converged. 3.
    NotConverged,
    /// A release failed after its breaking migrations ran (deployed with
    /// `--allow-breaking-migration`): the version that served before cannot
    /// serve the schema they left, so the service is down whatever the swarm
    /// runs, until `rollback --restore-data`. 4: not [`Exit::NotConverged`],
    /// whose promise is that the old version still serves.
    ServiceDown,
    /// `plan --exit-code`: the deploy would change something. 2, as the issue
    /// asked and as `terraform plan -detailed-exitcode` exits; it shares the
    /// code with [`Exit::Usage`], so with `--exit-code` on the command line
    /// a usage error exits [`USAGE_WITH_EXIT_CODE`] instead.
    Changes,
    /// Another task holds the stack's deploy lock: retry later. 75, sysexits'
    /// EX_TEMPFAIL ("temporary failure, retry later").
    LockHeld,
    /// Ended by SIGINT or SIGTERM: 128 + the signal (130, 143), as a shell
    /// reports a process the signal killed.
    Interrupted(Signal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Failure => 1,
            Exit::Usage | Exit::Changes => 2,
            Exit::NotConverged => 3,
            Exit::ServiceDown => 4,
            Exit::LockHeld => 75,
            Exit::Interrupted(Signal::Int) => 130,
            Exit::Interrupted(Signal::Term) => 143,
        }
    }

    /// A new error of this kind.
    pub fn error(self, message: impl fmt::Display) -> anyhow::Error {
        self.wrap(anyhow::anyhow!("{message}"))
    }

    /// `error`, marked as this kind; it prints exactly as before.
    pub fn wrap(self, error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Marked { exit: self, error })
    }
}

/// The exit code an error means: the outermost kind marked in its chain,
/// else [`Exit::Failure`].
pub fn code_of(error: &anyhow::Error) -> Exit {
    error.chain().find_map(|cause| cause.downcast_ref::<Marked>()).map_or(Exit::Failure, |marked| marked.exit)
}

/// A usage error on a command line that asks for `--exit-code`, where 2
/// means "changes": sysexits' EX_USAGE.
pub const USAGE_WITH_EXIT_CODE: u8 = 64;

/// The table for `cargo xtask --help`.
pub const HELP: &str = "\
Exit codes:
  0    success
  1    failure
  2    usage: the command line does not parse; plan --exit-code: the deploy would change something
       (then a usage error exits 64)
  3    not converged: deploy or rollback changed the stack but the new version is not live
       (timed out, rolled back by the swarm, or a job failed; the version that served still serves);
       status: a service has not converged, or the app runs a version whose deploy timed out (unverified)
  4    service down: a deploy with --allow-breaking-migration failed after its breaking migrations ran,
       and the version that served before cannot serve the schema they left: `rollback --restore-data`
  75   the deploy lock is held by another task: retry later (or --lock-wait DURATION)
  130  interrupted by SIGINT (Ctrl-C)
  143  interrupted by SIGTERM";

/// The exit codes `task` (its name on the command line) ends with, each with
/// what it means there: its `--help` and its page of the command reference
/// list them. `None` for a name that is no task (a test checks that every
/// task has its entry).
pub fn of_task(task: &str) -> Option<Vec<(u8, &'static str)>> {
    const FAILURE: (u8, &str) = (1, "failure: read the error line");
    const USAGE: (u8, &str) = (2, "usage: the command line does not parse");
    const NOT_LIVE: (u8, &str) = (
        3,
        "not converged: the stack changed but the new version is not live (it timed out, the swarm rolled it \
         back, a job such as migrate failed, or its verification failed and the stack was put back); the version \
         that served still serves",
    );
    const LOCK_HELD: (u8, &str) = (
        75,
        "the deploy lock is held by another task: retry later, or --lock-wait DURATION; `unlock` if it was killed",
    );
    const SIGINT: (u8, &str) = (130, "interrupted by SIGINT (Ctrl-C); the deploy lock was released");
    const SIGTERM: (u8, &str) = (143, "interrupted by SIGTERM; the deploy lock was released");
    let codes = match task {
        "version" | "build" | "test" | "release" | "clean" | "completions" | "docs" | "login" | "logout"
        | "publish" | "history" | "unlock" | "secret" => vec![(0, "success"), FAILURE, USAGE],
        "logs" => vec![(0, "success, also when --follow is ended by Ctrl-C"), FAILURE, USAGE],
        "ci" => vec![
            (0, "success"),
            (1, "failure: the first failing stage's error"),
            USAGE,
            (130, "interrupted by SIGINT (Ctrl-C); clean and logout ran first"),
            (143, "interrupted by SIGTERM; clean and logout ran first"),
        ],
        "deploy" | "rollback" => {
            vec![(0, "success: the new version is live"), FAILURE, USAGE, NOT_LIVE, LOCK_HELD, SIGINT, SIGTERM]
        }
        "refresh-auth" => vec![(0, "success"), FAILURE, USAGE, LOCK_HELD, SIGINT, SIGTERM],
        "status" => vec![
            (0, "every service has converged, without drift (or with --allow-drift)"),
            (1, "the stack is not deployed, it drifted (without --allow-drift), or another failure"),
            USAGE,
            (3, "a service has not converged (this wins over drift)"),
        ],
        "plan" => vec![
            (0, "success; with --exit-code: the deploy would change nothing"),
            FAILURE,
            (2, "usage; with --exit-code: the deploy would change something"),
            (USAGE_WITH_EXIT_CODE, "usage, when the command line has --exit-code"),
        ],
        _ => return None,
    };
    Some(codes)
}

/// [`of_task`] as the help shows it, under `Exit codes:`.
pub fn task_help(task: &str) -> Option<String> {
    let codes = of_task(task)?;
    let lines: Vec<String> = codes.iter().map(|(code, meaning)| format!("  {code:<4} {meaning}")).collect();
    Some(format!("Exit codes:\n{}", lines.join("\n")))
}

/// An error with its kind. Shows as the error it wraps, and its source is
/// that error's, so `{:#}` prints the same chain.
#[derive(Debug)]
struct Marked {
    exit: Exit,
    error: anyhow::Error,
}

impl fmt::Display for Marked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for Marked {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_kind_is_found_under_context_and_the_message_is_unchanged() {
        let inner: anyhow::Result<()> = Err(anyhow::anyhow!("busy")).context("cannot take the lock");
        let marked = Exit::LockHeld.wrap(inner.unwrap_err());
        let outer = Err::<(), _>(marked).context("deploy failed").unwrap_err();
        assert_eq!(code_of(&outer), Exit::LockHeld);
        assert_eq!(format!("{outer:#}"), "deploy failed: cannot take the lock: busy");
        assert_eq!(code_of(&anyhow::anyhow!("plain")), Exit::Failure);
        assert_eq!(format!("{:#}", Exit::NotConverged.error("not live")), "not live");
    }

    #[test]
    fn the_codes_differ() {
        let all = [
            Exit::Failure,
            Exit::Usage,
            Exit::NotConverged,
            Exit::ServiceDown,
            Exit::LockHeld,
            Exit::Interrupted(Signal::Int),
            Exit::Interrupted(Signal::Term),
        ];
        let codes: std::collections::HashSet<u8> = all.iter().map(|exit| exit.code()).collect();
        assert_eq!(codes.len(), all.len());
        // Changes shares 2 with usage; with --exit-code, usage is 64.
        assert_eq!(Exit::Changes.code(), Exit::Usage.code());
        assert!(!codes.contains(&USAGE_WITH_EXIT_CODE) && HELP.contains("exits 64"));
        for exit in all {
            assert!(HELP.contains(&format!("  {}", exit.code())), "{exit:?} is not in the help");
        }
    }
}
