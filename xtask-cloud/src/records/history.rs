//! The history of the stack's deploys and rollbacks, kept on the swarm so
//! that every operator and every CI run sees the same one: each entry is a
//! record on the swarm (`records`: a config labelled
//! `com.todobackend.history=<stack>`, whose data is the entry as JSON).
//! Configs cannot change, so an entry is written once, when its outcome is
//! known; the newest 50 are kept. `cargo xtask history` prints them.

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context, Result};
use bollard::Docker;
use serde::{Deserialize, Serialize};
use xtask::ctx::Ctx;

use super::HISTORY_LABEL;
use crate::async_ctx::AsyncCtx;
use crate::clock;
use crate::service_spec::drift::SpecRecord;

/// Entries kept; older ones are removed when a new one is written.
pub const KEPT: usize = 50;

/// What put a version on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deploy,
    Rollback,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deploy => "deploy",
            Kind::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a release ended, as the history records it (the same words in the
/// JSON, the table and the messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Every service runs the new version (and it passed its verification).
    #[serde(rename = "converged")]
    Converged,
    /// The swarm rolled the update back.
    #[serde(rename = "rolled back")]
    RolledBack,
    #[serde(rename = "failed")]
    Failed,
    #[serde(rename = "timed out")]
    TimedOut,
    /// By SIGINT or SIGTERM, after the stack started changing.
    #[serde(rename = "interrupted")]
    Interrupted,
    /// `--detach`.
    #[serde(rename = "not watched")]
    NotWatched,
    /// It converged, then failed its acceptance suite in the swarm.
    #[serde(rename = "failed verification")]
    FailedVerification,
    /// A dry run's: it changed nothing, so it knows no outcome.
    #[serde(rename = "planned")]
    Planned,
    /// A word this version does not know (an entry written by a later one).
    #[serde(other, rename = "unknown")]
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::RolledBack => "rolled back",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Interrupted => "interrupted",
            Outcome::NotWatched => "not watched",
            Outcome::FailedVerification => "failed verification",
            Outcome::Planned => "planned",
            Outcome::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: Kind,
    pub version: String,
    /// The app image, and its digest in the registry when deploy knew it.
    pub image: String,
    pub digest: Option<String>,
    /// The commit the deployed image was built from (its
    /// `org.opencontainers.image.revision` label), when it is known.
    pub commit: Option<String>,
    pub actor: String,
    /// RFC 3339, UTC.
    pub at: String,
    pub outcome: Outcome,
    /// The error, for the outcomes that have one.
    #[serde(default)]
    pub detail: Option<String>,
    /// Each service's spec as this run left it (digests only), to tell drift:
    /// see `service_spec::drift`. Empty for entries written before it, or when the
    /// stack could not be read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub specs: BTreeMap<String, SpecRecord>,
    /// `deploy`'s verification in the swarm: `passed`, `failed`, `skipped
    /// (--no-verify)`; none for rollbacks and entries written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
}

/// Who runs this: the CI's user (GitHub Actions, CodeBuild), else the local
/// one: USER or LOGNAME, else the account's name (cron, `env -i`, and
/// containers often set neither).
pub fn actor() -> String {
    ["GITHUB_ACTOR", "CODEBUILD_INITIATOR", "USER", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.trim().is_empty()))
        .or_else(account_name)
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The name of the account this process runs as, from the password database.
fn account_name() -> Option<String> {
    // SAFETY: getpwuid_r writes the entry into `entry` and its strings into
    // `buffer`, both ours and valid for their sizes; `found` points at
    // `entry` on success, and its pw_name at a NUL-terminated string in
    // `buffer`, read before either goes away.
    unsafe {
        let mut entry: libc::passwd = std::mem::zeroed();
        let mut buffer = vec![0 as libc::c_char; 4096];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let status = libc::getpwuid_r(libc::geteuid(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found);
        if status != 0 || found.is_null() || (*found).pw_name.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr((*found).pw_name).to_string_lossy().trim().to_owned();
        (!name.is_empty()).then_some(name)
    }
}

/// The label `cargo xtask build` puts the image's commit in.
pub const REVISION_LABEL: &str = "org.opencontainers.image.revision";

/// The commit `image` was built from, from its label, as the engine that
/// runs this task has the image (the data node's, on a swarm of one node; a
/// deploy has pulled it there by the time it records). `None` when that
/// engine has no such image, or the image no label (built before it existed).
pub async fn image_commit(docker: &Docker, image: &str) -> Option<String> {
    let inspected = docker.inspect_image(image).await.ok()?;
    let labels = inspected.config?.labels?;
    labels.get(REVISION_LABEL).map(|commit| commit.trim().to_owned()).filter(|commit| !commit.is_empty())
}

/// The commit of `version`: its image's label, else the checkout's HEAD
/// when `version` is HEAD's own short hash (a deploy of the checkout), else
/// unknown; never the operator's checkout for another version.
pub fn commit_of(ctx: &Ctx, docker: &Docker, image: &str, digest: Option<&str>, version: &str) -> Option<String> {
    // By digest first: an image the swarm pulled has its digest, not always its tag.
    let by_digest = digest
        .filter(|digest| digest.starts_with("sha256:"))
        .map(|digest| format!("{}@{digest}", crate::image_ref::ImageRef::parse(image).name));
    let labelled = ctx
        .block_on(async {
            for reference in by_digest.iter().map(String::as_str).chain([image]) {
                if let Some(commit) = image_commit(docker, reference).await {
                    return Ok(Some(commit));
                }
            }
            Ok(None)
        })
        .ok()
        .flatten();
    labelled.or_else(|| {
        xtask::git::head_commit(&ctx.settings.root).filter(|head| {
            version.len() >= 7 && version.chars().all(|c| c.is_ascii_hexdigit()) && head.starts_with(version)
        })
    })
}

/// An entry for `version` of `kind` with `outcome`, stamped now.
pub fn entry(
    kind: Kind,
    version: &str,
    image: &str,
    digest: Option<&str>,
    commit: Option<String>,
    outcome: Outcome,
) -> Entry {
    Entry {
        kind,
        version: version.to_owned(),
        image: image.to_owned(),
        digest: digest.filter(|digest| digest.starts_with("sha256:")).map(str::to_owned),
        commit,
        actor: actor(),
        at: clock::rfc3339(SystemTime::now()),
        outcome,
        detail: None,
        specs: BTreeMap::new(),
        verification: None,
    }
}

/// Write `entry` to the swarm and drop the entries beyond the newest 50. A
/// dry run prints it instead. A failure to record is reported, never the
/// reason a deploy fails: the stack has already changed by then.
pub fn record(ctx: &Ctx, stack: &str, entry: &Entry) {
    let description = format!("record {} of {} ({}) in the stack's history", entry.kind, entry.version, entry.outcome);
    let recorded = ctx.call(&description, (), async { write_and_prune(&ctx.docker().await?, stack, entry).await });
    if let Err(err) = recorded {
        ctx.warn(&format!("could not record this {} in the history: {err:#}", entry.kind));
    }
}

/// Write `entry`, then drop the entries beyond the newest 50.
pub async fn write_and_prune(docker: &Docker, stack: &str, entry: &Entry) -> Result<()> {
    write(docker, stack, entry).await?;
    prune(docker, stack).await
}

async fn write(docker: &Docker, stack: &str, entry: &Entry) -> Result<()> {
    let name = super::history_name(stack, SystemTime::now());
    super::create(docker, HISTORY_LABEL, stack, &name, entry)
        .await
        .with_context(|| format!("cannot create the swarm config {name}"))?;
    Ok(())
}

/// The stack's entries, newest first (their names sort as they were
/// written), with their config ids.
async fn read(docker: &Docker, stack: &str) -> Result<super::Listed<Entry>> {
    super::list(docker, HISTORY_LABEL, stack).await.context("cannot list the swarm's configs")
}

async fn prune(docker: &Docker, stack: &str) -> Result<()> {
    for (id, _) in read(docker, stack).await?.records.into_iter().skip(KEPT) {
        super::remove(docker, &id).await.with_context(|| format!("cannot remove the old history entry {id}"))?;
    }
    Ok(())
}

/// The stack's history, newest first (reads only: a dry run reads it too).
/// Configs under the history's label that hold no entry this xtask reads
/// are left out, and counted and named in one warning, once per run (a
/// task may read the history more than once).
pub fn list(ctx: &Ctx, stack: &str) -> Result<Vec<Entry>> {
    let listed = ctx.block_on(async { read(&ctx.docker().await?, stack).await })?;
    static WARNED: std::sync::Once = std::sync::Once::new();
    if !listed.unreadable.is_empty() {
        WARNED.call_once(|| ctx.warn(&unreadable_warning(stack, &listed.unreadable)));
    }
    Ok(listed.records.into_iter().map(|(_, entry)| entry).collect())
}

/// The warning about the history's configs that hold no readable entry.
fn unreadable_warning(stack: &str, names: &[String]) -> String {
    let (count, remove) = match names.len() {
        1 => ("1 entry".to_owned(), "removes it if it is not another tool's"),
        n => (format!("{n} entries"), "removes them if they are not another tool's"),
    };
    format!(
        "skipped {count} of stack {stack}'s history that cannot be read (not an entry as this xtask writes it): \
         {}; `docker config inspect --pretty NAME` shows one, `docker config rm NAME` {remove}",
        names.join(", ")
    )
}

/// The version a rollback returns to: the newest one that converged and is
/// not the one running now.
pub fn previous_good(entries: &[Entry], running: Option<&str>) -> Option<String> {
    entries
        .iter()
        .filter(|entry| entry.outcome == Outcome::Converged)
        .find(|entry| Some(entry.version.as_str()) != running)
        .map(|entry| entry.version.clone())
}

/// The version `rollback` goes back to from `running` by default (also the
/// one `deploy` puts back after a failed verification): after a failed
/// release, the version that served before it; else the newest other one
/// that converged.
pub fn back_from(entries: &[Entry], running: &str) -> Option<String> {
    serving_before_failure(entries).or_else(|| previous_good(entries, Some(running)))
}

/// The version that served before the newest entry of the history, when
/// that entry is a release that did not converge: the newest older entry
/// that converged. `None` when the newest entry converged (or was not
/// watched): then "back" is the version before the running one.
fn serving_before_failure(entries: &[Entry]) -> Option<String> {
    let (newest, older) = entries.split_first()?;
    if matches!(newest.outcome, Outcome::Converged | Outcome::NotWatched) {
        return None;
    }
    older.iter().find(|entry| entry.outcome == Outcome::Converged).map(|entry| entry.version.clone())
}

/// The deploy that left `running` (the app's version) on the stack without
/// its verification: the newest entry, when it is a deploy of that version
/// that timed out or was interrupted. Its update went on in the swarm, and
/// may have converged since; a deploy settles it (of the same version, it
/// verifies it; of another, it replaces it).
pub fn unverified<'a>(entries: &'a [Entry], running: &str) -> Option<&'a Entry> {
    let newest = entries.first()?;
    let unfinished = matches!(newest.outcome, Outcome::TimedOut | Outcome::Interrupted);
    (newest.kind == Kind::Deploy && unfinished && newest.version == running).then_some(newest)
}

/// The specs of the newest entry that recorded them (entries newest first),
/// against which the live ones show drift.
pub fn last_specs(entries: &[Entry]) -> Option<BTreeMap<String, SpecRecord>> {
    entries.iter().find(|entry| !entry.specs.is_empty()).map(|entry| entry.specs.clone())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn at(version: &str, at: &str, outcome: Outcome) -> Entry {
        Entry {
            kind: Kind::Deploy,
            version: version.into(),
            image: format!("r/app:{version}"),
            digest: None,
            commit: None,
            actor: "t".into(),
            at: at.into(),
            outcome,
            detail: None,
            specs: BTreeMap::new(),
            verification: None,
        }
    }

    #[test]
    fn the_rollback_target_is_the_last_good_version_that_is_not_running() {
        let mut entries = vec![
            at("A", "2026-11-24T01:00:00Z", Outcome::Converged),
            at("B", "2026-11-24T02:00:00Z", Outcome::RolledBack),
            at("B2", "2026-11-24T03:00:00Z", Outcome::Converged),
        ];
        entries.sort_by(|a, b| b.at.cmp(&a.at));
        assert_eq!(entries[0].version, "B2");
        assert_eq!(previous_good(&entries, Some("B2")).as_deref(), Some("A"));
        // After a failed release the running version is still the good one.
        assert_eq!(previous_good(&entries[1..], Some("A")), None);
        assert_eq!(previous_good(&entries, None).as_deref(), Some("B2"));
    }

    #[test]
    fn after_a_failed_release_back_is_the_version_that_served_before_it() {
        let entry = |version: &str, outcome: Outcome| at(version, "", outcome);
        // Newest first: C failed after A served, B had converged earlier.
        let entries = [
            entry("C", Outcome::Failed),
            entry("A", Outcome::Converged),
            entry("B", Outcome::Converged),
            entry("A", Outcome::Converged),
        ];
        assert_eq!(serving_before_failure(&entries).as_deref(), Some("A"));
        let entries = [entry("C", Outcome::RolledBack), entry("X", Outcome::TimedOut), entry("B", Outcome::Converged)];
        assert_eq!(serving_before_failure(&entries).as_deref(), Some("B"));
        // The newest release converged: no failure to go back from.
        assert_eq!(serving_before_failure(&entries[2..]), None);
        assert_eq!(serving_before_failure(&[entry("C", Outcome::NotWatched), entry("A", Outcome::Converged)]), None);
        assert_eq!(serving_before_failure(&[]), None);
    }

    #[test]
    fn a_deploy_that_timed_out_leaves_its_version_unverified_until_the_next_entry() {
        let entry = |version: &str, outcome: Outcome| at(version, "", outcome);
        let timed_out = [entry("B", Outcome::TimedOut), entry("A", Outcome::Converged)];
        assert_eq!(unverified(&timed_out, "B").map(|entry| entry.version.as_str()), Some("B"));
        // The swarm rolled it back: A runs, verified when it was deployed.
        assert_eq!(unverified(&timed_out, "A"), None);
        let interrupted = [entry("B", Outcome::Interrupted), entry("A", Outcome::Converged)];
        assert!(unverified(&interrupted, "B").is_some());
        // A deploy since (B verified, or another version) settles it.
        let settled = [entry("B", Outcome::Converged), entry("B", Outcome::TimedOut)];
        assert_eq!(unverified(&settled, "B"), None);
        let mut rollback = entry("B", Outcome::TimedOut);
        rollback.kind = Kind::Rollback;
        assert_eq!(unverified(&[rollback], "B"), None);
        assert_eq!(unverified(&[], "B"), None);
    }

    #[test]
    fn entries_round_trip_through_json_and_tolerate_missing_detail() {
        let entry = at("A", "2026-11-24T01:00:00Z", Outcome::RolledBack);
        let json = serde_json::to_string(&entry).unwrap();
        assert!(json.contains(r#""kind":"deploy""#) && json.contains(r#""outcome":"rolled back""#), "{json}");
        assert_eq!(serde_json::from_str::<Entry>(&json).unwrap(), entry);
        let old = r#"{"kind":"deploy","version":"A","image":"i","digest":null,"commit":null,"actor":"t","at":"x","outcome":"failed"}"#;
        let old = serde_json::from_str::<Entry>(old).unwrap();
        assert_eq!((old.detail, old.outcome), (None, Outcome::Failed));
        // An outcome a later version wrote is read, as unknown.
        let later = r#"{"kind":"rollback","version":"A","image":"i","digest":null,"commit":null,"actor":"t","at":"x","outcome":"paused"}"#;
        assert_eq!(serde_json::from_str::<Entry>(later).unwrap().outcome, Outcome::Unknown);
    }

    #[test]
    fn unreadable_entries_are_counted_and_named_in_one_line() {
        let one = unreadable_warning("s", &["s_history_x".into()]);
        assert!(one.contains("skipped 1 entry of stack s's history") && one.contains("s_history_x"), "{one}");
        assert!(one.contains("removes it if it is"), "{one}");
        let two = unreadable_warning("s", &["a".into(), "b".into()]);
        assert!(two.contains("skipped 2 entries") && two.contains("a, b") && !two.contains('\n'), "{two}");
    }

    #[test]
    fn without_user_or_logname_the_actor_is_the_account_name() {
        // The account, as the system's own tool finds it.
        let out = std::process::Command::new("id").arg("-un").output().expect("id runs");
        let account = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(account_name().as_deref(), Some(account.as_str()));
    }
}
