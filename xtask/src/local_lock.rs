//! One `release` or `clean` at a time per local environment (compose
//! project): two at once raced each other's `compose run` into two networks
//! of one name, after which every compose command of the project failed
//! ("network ... is ambiguous"). The lock is a file lock (flock) on this
//! machine, so it goes with the process however that ends; its file names
//! the holder, so that a second run says whom it waits for.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use crate::ctx::Ctx;

/// How long a second run waits for the first before it gives up: longer
/// than a release takes (the app has 90 s to be healthy).
const WAIT_AT_MOST: Duration = Duration::from_secs(15 * 60);
const POLL: Duration = Duration::from_millis(200);

/// Held for as long as it lives; dropping it (or the process ending)
/// releases the local environment.
pub struct LocalLock {
    _file: File,
}

/// Take the lock of the local environment `ctx.settings.compose_project` for
/// `task`, waiting (and saying for whom) while another run holds it. A dry
/// run takes none: it changes nothing.
pub fn acquire(ctx: &Ctx, task: &str) -> Result<Option<LocalLock>> {
    let project = &ctx.settings.compose_project;
    let path = lock_path(project);
    ctx.effect(&format!("lock the local environment {project} ({})", path.display()), None, || {
        acquire_at(ctx, &path, project, task, WAIT_AT_MOST).map(Some)
    })
}

/// The lock file of `project`, in the temporary directory that every
/// checkout on this machine shares (a project's name is the same whichever
/// checkout names it).
fn lock_path(project: &str) -> PathBuf {
    let safe: String = project
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
        .collect();
    std::env::temp_dir().join(format!("xtask-local-{safe}.lock"))
}

fn acquire_at(ctx: &Ctx, path: &PathBuf, project: &str, task: &str, wait: Duration) -> Result<LocalLock> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    let started = Instant::now();
    let mut announced = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let holder = holder(&mut file);
                if started.elapsed() >= wait {
                    bail!(
                        "the local environment {project} is still in use by {holder} after {}s: wait for it to \
                         finish, or stop it",
                        wait.as_secs()
                    );
                }
                if !announced {
                    ctx.say(&format!("waiting for the local environment {project}: in use by {holder}"));
                    announced = true;
                }
                std::thread::sleep(POLL);
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
    let since = humantime::format_rfc3339_seconds(SystemTime::now());
    let mine = format!("`cargo xtask {task}` (pid {}, since {since})", std::process::id());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(mine.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(LocalLock { _file: file })
}

/// Who holds the lock, as the holder wrote it.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
    match read {
        Ok(_) if !text.trim().is_empty() => text.trim().to_owned(),
        _ => "another run of the xtask".to_owned(),
    }
}
