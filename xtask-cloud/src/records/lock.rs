//! The deploy lock: one task at a time changes a stack. It is a Docker
//! config on the swarm named `<stack>_deploy_lock`; the swarm refuses to
//! create a config whose name exists, so taking it is atomic for every
//! operator and CI run, wherever they run. It says who holds it, from which
//! host and process, for which version, and since when, and carries a token
//! unique to this acquisition.
//!
//! It belongs to its holder: releasing removes it only while it still
//! carries the holder's token, so a run whose lock was taken away (`cargo
//! xtask unlock --force`) leaves the next holder's lock alone, and says so.
//! A task holds it through `lock::hold`, which releases it on every way out:
//! success, failure, and Ctrl-C or SIGTERM (`interrupt.rs`). A holder killed
//! outright (SIGKILL, a lost machine) leaves it: `cargo xtask unlock` shows
//! the holder and removes it, unless that process still runs on this host.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use bollard::Docker;
use serde::{Deserialize, Serialize};
use xtask::exit::Exit;
use xtask::output::progress;

use super::{Created, LOCK_LABEL, Removal, lock_name as name};

/// How often a waiting task asks again.
const RETRY: Duration = Duration::from_secs(2);

/// Who holds the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub task: String,
    pub version: String,
    pub holder: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339, UTC.
    pub since: String,
    /// Unique to one acquisition (empty in locks of older versions).
    #[serde(default)]
    pub token: String,
}

/// A lock this run took: the config's ID and the token it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub id: String,
    pub token: String,
}

impl Holder {
    pub fn here(task: &str, version: &str) -> Holder {
        Holder {
            task: task.to_owned(),
            version: version.to_owned(),
            holder: super::history::actor(),
            host: this_host(),
            pid: std::process::id(),
            since: crate::clock::rfc3339(SystemTime::now()),
            token: token(),
        }
    }

    /// `deploy of 1.2 in progress by alice since 2026-11-24T01:30:00Z (host ci-3, process 4242)`.
    pub fn describe(&self) -> String {
        format!(
            "{} of {} in progress by {} since {} (host {}, process {})",
            self.task, self.version, self.holder, self.since, self.host, self.pid
        )
    }

    /// Whether its process runs: on this host (same host name) the answer
    /// is known, elsewhere it is not.
    pub fn liveness(&self) -> Liveness {
        liveness(&self.host, self.pid)
    }
}

/// Whether process `pid` of host `host` runs: known on this host only.
pub fn liveness(host: &str, pid: u32) -> Liveness {
    if host_name().as_deref() != Some(host) || pid == 0 {
        return Liveness::Unknown;
    }
    if process_runs(pid) { Liveness::Runs } else { Liveness::Gone }
}

/// This host's name, as a lock's holder records it.
pub fn this_host() -> String {
    host_name().unwrap_or_else(|| "an unknown host".to_owned())
}

pub enum Liveness {
    Runs,
    Gone,
    Unknown,
}

/// This machine's name, as `hostname` prints it.
fn host_name() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if status != 0 {
        return None;
    }
    let end = buffer.iter().position(|byte| *byte == 0).unwrap_or(buffer.len());
    let name = String::from_utf8_lossy(&buffer[..end]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

/// Whether process `pid` exists on this host: signal 0 checks without
/// sending anything (EPERM: it exists, as another user's).
fn process_runs(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let status = unsafe { libc::kill(pid, 0) };
    status == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// 128 random bits from the kernel, in hex; should /dev/urandom be missing,
/// the time, process and host, which still differ between acquisitions.
fn token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut bytes));
    match random {
        Ok(()) => bytes.iter().map(|byte| format!("{byte:02x}")).collect(),
        Err(_) => {
            let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            format!("{nanos:x}-{}-{}", std::process::id(), host_name().unwrap_or_default())
        }
    }
}

pub async fn take(docker: &Docker, stack: &str, holder: &Holder, wait: Option<Duration>) -> Result<Taken> {
    let started = Instant::now();
    let mut said = false;
    loop {
        let created = super::create(docker, LOCK_LABEL, stack, &name(stack), holder)
            .await
            .with_context(|| format!("cannot take the deploy lock of stack {stack}"))?;
        if let Created::Id(id) = created {
            return Ok(Taken { id, token: holder.token.clone() });
        }
        let Some(other) = current(docker, stack).await? else { continue };
        match wait {
            Some(wait) if started.elapsed() < wait => {
                if !said {
                    progress(&format!("waiting for the deploy lock: {} (up to {}s)", other.describe(), wait.as_secs()));
                    said = true;
                }
                tokio::time::sleep(RETRY).await;
            }
            Some(wait) => {
                return Err(Exit::LockHeld.error(format!(
                    "{} and still after {}s: try again later, or if that task was killed, `cargo xtask unlock`",
                    other.describe(),
                    wait.as_secs()
                )));
            }
            None => {
                return Err(Exit::LockHeld.error(format!(
                    "{}: wait for it (--lock-wait DURATION), or if that task was killed, `cargo xtask unlock`",
                    other.describe()
                )));
            }
        }
    }
}

/// The stack's lock as the swarm has it: its config ID and holder.
pub async fn read(docker: &Docker, stack: &str) -> Result<Option<(String, Holder)>> {
    let found = super::read::<Holder>(docker, &name(stack))
        .await
        .with_context(|| format!("cannot read the deploy lock of stack {stack}"))?;
    // A lock whose data does not read is still the stack's lock.
    Ok(found.map(|(id, holder)| {
        let holder = holder.unwrap_or_else(|| Holder {
            task: "a task".into(),
            version: "an unknown version".into(),
            holder: "someone".into(),
            host: "an unknown host".into(),
            pid: 0,
            since: "an unknown time".into(),
            token: String::new(),
        });
        (id, holder)
    }))
}

/// The holder of the stack's lock, if it is held.
pub async fn current(docker: &Docker, stack: &str) -> Result<Option<Holder>> {
    Ok(read(docker, stack).await?.map(|(_, holder)| holder))
}

/// How a release ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    /// It was still ours, and is gone now.
    Ours,
    /// Someone removed it while this run held it, and nobody holds it now.
    TakenAway,
    /// Someone removed it, and another task holds the stack's lock now.
    HeldByAnother(Holder),
}

impl Released {
    pub fn said(&self) -> String {
        match self {
            Released::Ours => "released the deploy lock".to_owned(),
            Released::TakenAway => "the deploy lock was taken away while this run held it (`cargo xtask unlock \
                                     --force`?): another task may have changed the stack meanwhile"
                .to_owned(),
            Released::HeldByAnother(holder) => format!(
                "the deploy lock was taken away while this run held it (`cargo xtask unlock --force`?) and is now \
                 another task's ({}): left it in place",
                holder.describe()
            ),
        }
    }
}

/// Release the lock `taken`, only if it is still the stack's lock.
///
/// Read, compare, delete. The engine offers no conditional delete of a
/// config (`DELETE /configs/{id}` takes no version or precondition), but a
/// config cannot change and its ID is never given to another: so the lock is
/// read by name, its token compared with ours, and it is deleted by the ID
/// we took it with. Should another task replace it between the read and the
/// delete, the delete finds no config with our ID and theirs stays: the race
/// cannot remove someone else's lock, it can only make us report less.
pub async fn release(docker: &Docker, stack: &str, taken: &Taken) -> Result<Released> {
    match read(docker, stack).await? {
        Some((id, holder)) if holder.token != taken.token || id != taken.id => {
            return Ok(Released::HeldByAnother(holder));
        }
        None => return Ok(Released::TakenAway),
        Some(_) => {}
    }
    let removal = super::remove(docker, &taken.id)
        .await
        .with_context(|| format!("cannot remove the deploy lock {}", name(stack)))?;
    Ok(match removal {
        Removal::Removed => Released::Ours,
        Removal::AlreadyGone => Released::TakenAway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_described_for_the_refusal() {
        let holder = Holder {
            task: "deploy".into(),
            version: "1.2".into(),
            holder: "alice".into(),
            host: "ci-3".into(),
            pid: 42,
            since: "2026-11-24T01:30:00Z".into(),
            token: token(),
        };
        assert_eq!(
            holder.describe(),
            "deploy of 1.2 in progress by alice since 2026-11-24T01:30:00Z (host ci-3, process 42)"
        );
        let json = serde_json::to_string(&holder).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), holder);
        // A lock written before tokens existed still reads.
        let old = r#"{"task":"deploy","version":"1","holder":"a","host":"h","pid":1,"since":"t"}"#;
        assert_eq!(serde_json::from_str::<Holder>(old).unwrap().token, "");
    }

    #[test]
    fn what_a_release_says_reads_as_one_sentence() {
        let holder = Holder::here("deploy", "1");
        for released in [Released::Ours, Released::TakenAway, Released::HeldByAnother(holder)] {
            let said = released.said();
            assert!(!said.contains("  "), "a run of spaces in {said:?}");
        }
    }

    #[test]
    fn each_acquisition_has_its_own_token_and_this_process_runs_here() {
        let (first, second) = (Holder::here("deploy", "1"), Holder::here("deploy", "1"));
        assert_ne!(first.token, second.token);
        assert_eq!(first.token.len(), 32);
        assert!(matches!(first.liveness(), Liveness::Runs));
        let elsewhere = Holder { host: "another-host.invalid".into(), ..first.clone() };
        assert!(matches!(elsewhere.liveness(), Liveness::Unknown));
        // pid_max is at most 2^22: this pid never runs.
        let gone = Holder { pid: 1 << 23, ..first };
        assert!(matches!(gone.liveness(), Liveness::Gone));
    }
}
