//! A release: a version put on the stack, by `deploy` (the checkout's
//! version) or `rollback` (an earlier one), through the same steps.
//!
//! 1. Pre-flight, before anything changes: the engine is a swarm manager, the
//!    stack file parses and every variable in it is set or has a default, a
//!    node carries each placement label, every image is in its registry.
//! 2. What the new version does to the database (`migrations`), run on the
//!    data node.
//! 3. The jobs (migrate) first, then `docker stack deploy
//!    --with-registry-auth` of the whole stack, retried while the network of
//!    a just-removed stack is still going away.
//! 4. Unless `--detach`: watch every service until it runs the new image (or,
//!    for one-shot services, completed), failing on a rollback, a paused
//!    update, a one-shot service out of attempts, or the timeout; then verify
//!    it in the swarm (`verify`).
//!
//! Whatever happens once the stack changes is recorded in the history.

pub mod converge;
pub mod job;
pub mod migrations;
mod preflight;
mod prune;
pub mod verify;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::async_ctx::AsyncCtx;
use crate::records::history::{self, Kind, Outcome};
use crate::stack::Snapshot;
use crate::stackfile;
use converge::Verdict;
use watch::Expected;
use xtask::ctx::Ctx;

/// A version to put on the stack: by `deploy` (the checkout's version) or by
/// `rollback` (an earlier one).
pub struct Release<'a> {
    /// As the history records it.
    pub kind: Kind,
    pub version: &'a str,
    pub allow_breaking_migration: bool,
    pub detach: bool,
    pub timeout: Duration,
    /// Whether it runs without `login`: the way back it points to does too.
    pub no_login: bool,
    /// Remove the services the stack file no longer has (`--prune`).
    pub prune: bool,
    /// Whether the new version is verified in the swarm once it converged.
    pub verification: verify::Verification,
}

impl Release<'_> {
    /// Pre-flight (with the database check), then the change, watched and
    /// recorded in the history. `before_change` runs after the checks and
    /// before anything changes.
    pub fn run(
        &self,
        ctx: &Ctx,
        before_change: impl FnOnce(&Checked, Option<&migrations::Report>) -> Result<()>,
    ) -> Result<()> {
        let version = self.version;
        let stack = ctx.settings.stack.clone();
        // The stack file and `docker stack deploy` read APP_VERSION from the
        // shell: for a rollback it is the target's, not the checkout's.
        let _version = ctx.sh().push_env("APP_VERSION", version);

        let checked = ctx.step(&format!("pre-flight checks for stack {stack}"), || preflight(ctx))?;
        let report = ctx.step("what the new version does to the database", || database_report(ctx, &checked))?;
        let mut breaking = Vec::new();
        if let Some(report) = &report {
            let effect = migrations::effect(report);
            if let migrations::Effect::Breaking(names) = &effect {
                breaking = names.clone();
            }
            let refused = matches!(effect, migrations::Effect::CannotServe { .. }) && self.kind == Kind::Rollback;
            if !refused {
                ctx.say(&format!("    {}", migrations::verdict(version, &effect, self.allow_breaking_migration)?));
            }
        }
        before_change(&checked, report.as_ref())?;
        ctx.plan_only(|| plan_in_dry_run(ctx, &checked, self.prune))?;

        // From here on the stack changes: whatever happens is recorded.
        let image = checked.app().map(|service| service.image.clone()).unwrap_or_default();
        let digest = checked.digests.get(&image).cloned();
        let commit = history::commit_of(ctx, &checked.docker, &image, digest.as_deref(), version);
        let interrupted =
            history::entry(self.kind, version, &image, digest.as_deref(), commit.clone(), Outcome::Interrupted);
        // After a breaking migration the version serving now cannot serve
        // again if this release fails: which one it is, to point the way back.
        let serving = if breaking.is_empty() { None } else { self.app_version(ctx, &checked.docker, &stack) };
        crate::interrupt::stack_changing(Some(interrupted));
        let (outcome, result, stack_deployed) = self.change(ctx, &stack, &checked);
        crate::interrupt::release_over();
        let result = match (result, serving) {
            (Err(err), Some(serving)) if stack_deployed && serving != version => {
                Err(self.way_back(ctx, &checked.docker, &stack, &serving, &breaking, err))
            }
            (result, _) => result,
        };
        // A first deploy has pulled the image only now.
        let commit = commit.or_else(|| history::commit_of(ctx, &checked.docker, &image, digest.as_deref(), version));
        let mut entry = history::entry(self.kind, version, &image, digest.as_deref(), commit, outcome);
        entry.detail = result.as_ref().err().map(|err| format!("{err:#}"));
        if matches!(outcome, Outcome::Converged | Outcome::FailedVerification) {
            let no_task = checked.app().is_some_and(|app| app.scaled_to_zero);
            entry.verification = if no_task { None } else { self.verification.recorded(outcome == Outcome::Converged) };
        }
        if stack_deployed {
            entry.specs = crate::service_spec::drift::as_deployed(ctx, &checked.docker, &stack);
        }
        history::record(ctx, &stack, &entry);
        result
    }

    /// Whether the history says this version was left on the stack
    /// unverified (`history::unverified`); unknown counts as no.
    fn left_unverified(&self, ctx: &Ctx, stack: &str) -> bool {
        match history::list(ctx, stack) {
            Ok(entries) => history::unverified(&entries, self.version).is_some(),
            Err(err) => {
                ctx.warn(&format!("cannot read the history of stack {stack}: {err:#}"));
                false
            }
        }
    }

    /// The version of the stack's app as the swarm's spec has it now, if it
    /// can be read.
    fn app_version(&self, ctx: &Ctx, docker: &bollard::Docker, stack: &str) -> Option<String> {
        match ctx.block_on(crate::stack::running_app(docker, stack, &ctx.settings.image_name())) {
            Ok(app) => app.map(|app| app.version),
            Err(err) => {
                ctx.warn(&format!("cannot read which version stack {stack} runs: {err:#}"));
                None
            }
        }
    }

    /// The error of a release that failed after its breaking migrations ran:
    /// `serving`, the version that served before, cannot serve the schema
    /// they made, so the service stays down whatever the swarm does; say so,
    /// and the exact command that brings it back.
    fn way_back(
        &self,
        ctx: &Ctx,
        docker: &bollard::Docker,
        stack: &str,
        serving: &str,
        breaking: &[String],
        err: anyhow::Error,
    ) -> anyhow::Error {
        let landed = self.app_version(ctx, docker, stack);
        let landed = match landed.as_deref() {
            Some(landed) if landed == serving => format!("the swarm went back to version {serving}, which"),
            Some(landed) => format!("the swarm runs version {landed}, and version {serving}, which served before,"),
            None => format!("version {serving}, which served before,"),
        };
        let login = if self.no_login { " --no-login" } else { "" };
        xtask::exit::Exit::ServiceDown.error(format!(
            "{err:#}; {landed} cannot serve the schema {} left (not additive), so the service stays down: bring it \
             back with `cargo xtask rollback --restore-data{login}`, which restores the newest backup taken before \
             them and deploys {serving} again (the writes made since are lost; the current database is kept as a \
             backup)",
            breaking.join(", ")
        ))
    }

    /// Jobs first, then the stack, then the watch; the outcome for the
    /// history, and whether `docker stack deploy` of the whole stack ran.
    fn change(&self, ctx: &Ctx, stack: &str, checked: &Checked) -> (Outcome, Result<()>, bool) {
        let version = self.version;
        let Checked { docker, services, digests, .. } = checked;
        let expected: Vec<Expected> = services.iter().map(|service| Expected::new(stack, service, digests)).collect();
        let before = match ctx.block_on(Snapshot::read(docker, stack)) {
            Ok(before) => before,
            Err(err) => return (Outcome::Failed, Err(err), false),
        };
        let no_idle = HashMap::new();
        let before_updates: HashMap<String, Option<crate::stack::Update>> =
            expected.iter().map(|want| (want.full_name.clone(), before.update_of(&want.full_name))).collect();
        let already_running = watch::judge_all(&expected, &before, &before_updates, &no_idle)
            .iter()
            .all(|verdict| matches!(verdict, Verdict::Done(_)));
        // A version left running unverified (its deploy timed out) is
        // verified now: "already running" says only that it converged.
        let unverified = already_running && self.kind == Kind::Deploy && self.left_unverified(ctx, stack);
        if unverified {
            ctx.say(&format!(
                "Version {version} is already running on stack {stack}, unverified (its deploy did not finish): \
                 re-applying the stack file and verifying it"
            ));
        } else if already_running {
            ctx.say(&format!("Version {version} is already running on stack {stack}: re-applying the stack file only"));
        }

        let jobs: Vec<&stackfile::ServiceDef> = services.iter().filter(|service| service.one_shot).collect();
        if !already_running && !jobs.is_empty() && jobs.len() < services.len() {
            let needed = needed_by_jobs(services);
            if !needed.is_empty() {
                let names: Vec<&str> = needed.iter().map(|service| service.name.as_str()).collect();
                let started = ctx.step(&format!("start what the jobs need first: {}", names.join(", ")), || {
                    let expected: Vec<Expected> =
                        needed.iter().map(|service| Expected::new(stack, service, digests)).collect();
                    let what = "did not start, so the jobs did not run and the app was not updated (it runs the version it ran before)";
                    deploy_only(ctx, self.timeout, checked, stack, &names, &expected, &before_updates, what)
                });
                if let Err(err) = started {
                    return (Outcome::Failed, Err(err), false);
                }
            }
            let names: Vec<&str> = jobs.iter().map(|job| job.name.as_str()).collect();
            let ran = ctx.step(&format!("run the jobs first: {}", names.join(", ")), || {
                let jobs_expected: Vec<Expected> = jobs.iter().map(|job| Expected::new(stack, job, digests)).collect();
                // With what they depend on in the file, so that it stays a
                // whole stack file (every name in depends_on defined).
                let mut file_names = names.clone();
                file_names.extend(needed.iter().map(|service| service.name.as_str()));
                let what = "did not complete, so the app was not updated (it runs the version it ran before)";
                deploy_only(ctx, self.timeout, checked, stack, &file_names, &jobs_expected, &before_updates, what)
            });
            if let Err(err) = ran {
                return (Outcome::Failed, Err(err), false);
            }
        }

        let file = ctx.settings.stack_file.clone();
        if !self.prune {
            prune::warn_about_left_services(ctx, docker, stack, services);
        }
        let prune = self.prune;
        if let Err(err) = ctx.step(&format!("docker stack deploy {stack}"), || stack_deploy(ctx, stack, &file, prune)) {
            return (Outcome::Failed, Err(err), false);
        }
        hand_over_specs(ctx, docker, stack);
        if self.detach {
            ctx.print_result(&format!(
                "Stack {stack} deployed with version {version}, not waiting (--detach): follow it with `docker stack ps {stack}`"
            ));
            return (Outcome::NotWatched, Ok(()), true);
        }

        let names: Vec<&str> = expected.iter().map(|want| want.name.as_str()).collect();
        let watch = format!("watch {} until converged, timeout {}s", names.join(", "), self.timeout.as_secs());
        let outcome = ctx.step("wait until every service runs the new version", || {
            let planned = watch::Outcome::Planned;
            ctx.call(&watch, planned, watch::until_converged(docker, stack, &expected, &before_updates, self.timeout))
        });
        match outcome {
            Err(err) => (Outcome::Failed, Err(err), true),
            // A dry run changed nothing: it cannot know an outcome. Its plan
            // goes on with the verification a real run would make.
            Ok(watch::Outcome::Planned) => {
                let (_, result, deployed) = self.verified(ctx, stack, checked, already_running && !unverified, || ());
                (Outcome::Planned, result, deployed)
            }
            Ok(watch::Outcome::Converged(done)) => {
                self.verified(ctx, stack, checked, already_running && !unverified, || {
                    let summary: Vec<String> = done.iter().map(|(name, text)| format!("{name} {text}")).collect();
                    let state = if already_running { "was already running" } else { "is live" };
                    ctx.print_result(&format!("Version {version} {state} on stack {stack}: {}", summary.join(", ")));
                })
            }
            Ok(watch::Outcome::Failed { failed, waiting, timed_out }) => {
                let rolled_back =
                    failed.iter().any(|(_, failure)| matches!(failure, converge::Failure::RolledBack { .. }));
                let headline = if timed_out && !rolled_back {
                    // Not rolled back: the swarm's update goes on (README, deploy).
                    format!(
                        "version {version} did not converge within {}s, and is not verified: the swarm's update \
                         goes on, and `cargo xtask status` calls the version unverified (exit 3) until \
                         `cargo xtask deploy` of it again verifies it",
                        self.timeout.as_secs()
                    )
                } else if timed_out {
                    format!("version {version} did not converge within {}s", self.timeout.as_secs())
                } else {
                    format!("version {version} failed to deploy")
                };
                let outcome = if rolled_back {
                    Outcome::RolledBack
                } else if timed_out {
                    Outcome::TimedOut
                } else {
                    Outcome::Failed
                };
                (outcome, Err(failure(ctx, docker, stack, &headline, &failed, &waiting)), true)
            }
        }
    }
}

impl Release<'_> {
    /// The outcome of a rollout that converged: verified in the swarm first
    /// (unless `--no-verify`, or the version was already running and so was
    /// verified when it was deployed); `live` says it is live once it is.
    fn verified(
        &self,
        ctx: &Ctx,
        stack: &str,
        checked: &Checked,
        already_running: bool,
        live: impl FnOnce(),
    ) -> (Outcome, Result<()>, bool) {
        let verify = match &self.verification {
            verify::Verification::Run(verify) if !already_running => verify,
            _ => {
                live();
                return (Outcome::Converged, Ok(()), true);
            }
        };
        let Some(app) = checked.app() else {
            live();
            return (Outcome::Converged, Ok(()), true);
        };
        // `replicas: 0` (the app kept down on purpose): no task to verify.
        if app.scaled_to_zero {
            ctx.say(&format!("    {} runs no task (replicas: 0): nothing to verify", app.name));
            live();
            return (Outcome::Converged, Ok(()), true);
        }
        let credentials = match data_node(ctx, checked) {
            Ok(node) => node.credentials,
            Err(err) => return (Outcome::Failed, Err(err), true),
        };
        let target = verify::Target {
            stack,
            service: format!("{stack}_{}", app.name),
            image: &app.image,
            version: self.version,
            credentials,
            sh: ctx.sh(),
        };
        let title = format!(
            "verify version {} in the swarm: `{}` against each new {} task, timeout {}s",
            self.version,
            verify.command.join(" "),
            app.name,
            verify.timeout.as_secs()
        );
        let ran = ctx.step(&title, || {
            let description =
                format!("run `{}` as a one-off task on stack {stack}'s network", verify.command.join(" "));
            ctx.call(&description, (), verify::run(&checked.docker, &target, verify))
        });
        match ran {
            Ok(_) => {
                live();
                (Outcome::Converged, Ok(()), true)
            }
            Err(err) if verify::failure_of(&err).is_some() => (Outcome::FailedVerification, Err(err), true),
            Err(err) => (Outcome::Failed, Err(err.context(format!("cannot verify version {}", self.version))), true),
        }
    }

    /// After a failed verification (recorded as such): the whole stack back
    /// at the version `rollback` would choose, under the same lock; the error
    /// names the failing checks and where the stack is now.
    pub fn back_after_failed_verification(&self, ctx: &Ctx, err: anyhow::Error) -> anyhow::Error {
        let stack = &ctx.settings.stack;
        let failed = format!("{err:#}");
        let exit = xtask::exit::Exit::NotConverged;
        let entries = match history::list(ctx, stack) {
            Ok(entries) => entries,
            Err(list_err) => {
                return exit.error(format!(
                    "{failed}; cannot read the history of stack {stack} to roll back ({list_err:#}): \
                     run `cargo xtask rollback`"
                ));
            }
        };
        let Some(target) = history::back_from(&entries, self.version) else {
            return exit.error(format!(
                "{failed}; stack {stack} has no earlier converged version to go back to, so it still runs {}: \
                 fix it and deploy again",
                self.version
            ));
        };
        ctx.say(&format!(
            "Version {} failed verification: rolling back stack {stack} to version {target}...",
            self.version
        ));
        let back = Release {
            kind: Kind::Rollback,
            version: &target,
            allow_breaking_migration: false,
            detach: false,
            timeout: self.timeout,
            no_login: self.no_login,
            prune: false,
            verification: verify::Verification::NotApplicable,
        };
        let login = if self.no_login { " --no-login" } else { "" };
        let rolled_back = back.run(ctx, |_, report| match report.map(migrations::effect) {
            Some(migrations::Effect::CannotServe { problem, .. }) => bail!(
                "version {target} cannot serve the database the failed version left ({problem}): \
                 run `cargo xtask rollback --restore-data{login}`"
            ),
            _ => Ok(()),
        });
        match rolled_back {
            Ok(()) => exit.error(format!("{failed}; stack {stack} was rolled back to version {target}, which serves")),
            Err(back_err) => {
                exit.error(format!("{failed}; rolling stack {stack} back to version {target} failed too: {back_err:#}"))
            }
        }
    }
}

/// The plan at the top of `deploy --dry-run` and `rollback --dry-run`, as
/// lines of the dry run.
fn plan_in_dry_run(ctx: &Ctx, checked: &Checked, prune: bool) -> Result<()> {
    ctx.step("what this changes on the stack (the plan)", || {
        let recorded = history::last_specs(&history::list(ctx, &ctx.settings.stack)?);
        let plan = crate::service_spec::diff::make(
            ctx,
            &checked.docker,
            &checked.source,
            &checked.services,
            Some(&checked.digests),
            recorded.as_ref(),
        )?;
        for line in plan.render(prune) {
            ctx.plan_note(&line);
        }
        Ok(())
    })
}

/// The database as the release's image sees it (`todobackend migrations
/// --json`, run on the data node), or `None` before the stack's first deploy.
fn database_report(ctx: &Ctx, checked: &Checked) -> Result<Option<migrations::Report>> {
    let job = checked.release_job().or_else(|| checked.services.iter().find(|service| service.one_shot));
    let Some(app) = job.or(checked.services.first()) else {
        return Ok(None);
    };
    let stack = &ctx.settings.stack;
    if !ctx.block_on(crate::stack::exists(&checked.docker, stack))? {
        ctx.say(&format!("    stack {stack} is not deployed yet: no database to check"));
        return Ok(None);
    }
    let node = data_node(ctx, checked)?;
    let description = format!("run `todobackend migrations --json` of {} on the data node", app.image);
    // A dry run runs no job: it has no report, as for an image that cannot
    // give one.
    let report = ctx.call(&description, None, async {
        let json = migrations::run_on_data_node(&checked.docker, &node, &app.image, &["migrations", "--json"]).await;
        match json {
            // An image built before `migrations --json` existed cannot tell; it
            // also has no `-- additive` migrations to tell about.
            Err(err) if format!("{err:#}").contains("unknown command 'migrations'") => {
                ctx.say(&format!(
                    "    {} predates `todobackend migrations`: its migrations cannot be checked",
                    app.image
                ));
                Ok(None)
            }
            json => migrations::Report::parse(&json?).map(Some),
        }
    })?;
    Ok(report)
}

/// Where the stack's database jobs run (see `migrations::run_on_data_node`):
/// the placement constraints of the stack file's release job (the data label
/// on the single-node stack, none on the PostgreSQL one), and the registry
/// credential its images are pulled with.
pub fn data_node<'a>(ctx: &'a Ctx, checked: &Checked) -> Result<migrations::DataNode<'a>> {
    let app = checked.release_job().or(checked.services.first()).context("the stack file has no services")?;
    let registry = crate::image_ref::ImageRef::parse(&app.image).registry;
    let credentials = checked.credentials.get(&registry).cloned().flatten();
    Ok(migrations::DataNode { stack: &ctx.settings.stack, constraints: app.constraints.clone(), credentials })
}

/// Report the failing services (task errors, last log lines) and make the error.
fn failure(
    ctx: &Ctx,
    docker: &bollard::Docker,
    stack: &str,
    headline: &str,
    failed: &[(String, converge::Failure)],
    waiting: &[(String, String)],
) -> anyhow::Error {
    let mut reasons = Vec::new();
    for (name, failure) in failed {
        reasons.push(format!("{name}: {}", watch::describe_failure(failure)));
    }
    for (name, text) in waiting {
        reasons.push(format!("{name}: not converged ({text})"));
    }
    let reported: BTreeSet<&str> =
        failed.iter().map(|(name, _)| name.as_str()).chain(waiting.iter().map(|(name, _)| name.as_str())).collect();
    let _ = ctx.block_on(async {
        for name in &reported {
            watch::report(docker, stack, name).await;
        }
        Ok(())
    });
    let rolled_back = failed.iter().any(|(_, failure)| matches!(failure, converge::Failure::RolledBack { .. }));
    let swarm = if rolled_back { "the swarm rolled back" } else { "the swarm did not roll back" };
    xtask::exit::Exit::NotConverged.error(format!("{headline} ({swarm}): {}", reasons.join("; ")))
}

/// The long-running services that the jobs name in `depends_on` (`db` for
/// `migrate`), in the file's order.
fn needed_by_jobs(services: &[stackfile::ServiceDef]) -> Vec<&stackfile::ServiceDef> {
    let wanted: BTreeSet<&str> = services
        .iter()
        .filter(|service| service.one_shot)
        .flat_map(|job| job.depends_on.iter().map(String::as_str))
        .collect();
    services.iter().filter(|service| !service.one_shot && wanted.contains(service.name.as_str())).collect()
}

/// After a `docker stack deploy` of this release: the specs it left, for
/// the history entry of an interruption (a dry run changed nothing).
fn hand_over_specs(ctx: &Ctx, docker: &bollard::Docker, stack: &str) {
    if !ctx.settings.dry_run {
        crate::interrupt::stack_deployed(crate::service_spec::drift::as_deployed(ctx, docker, stack));
    }
}

/// Swarm starts a stack's services all at once, and `serve` refuses to start
/// while migrations are pending: updated together, the new app would fail
/// and roll back. So the jobs (migrate, collectstatic) are deployed first,
/// from a copy of the stack file that holds only them, and watched until they
/// completed; only then is the whole stack deployed. A failing job stops
/// here, with the app untouched. What the jobs depend on (the database) is
/// deployed the same way before them, and watched until it runs: a migrate
/// started beside a database that is still initialising would spend its
/// attempts on it.
///
/// Deploys the services `names` of the stack file and watches `expected`;
/// on failure the error says which of them `what` (`did not complete, so
/// ...`).
#[allow(clippy::too_many_arguments)]
fn deploy_only(
    ctx: &Ctx,
    timeout: Duration,
    checked: &Checked,
    stack: &str,
    names: &[&str],
    expected: &[Expected],
    before_updates: &HashMap<String, Option<crate::stack::Update>>,
    what: &str,
) -> Result<()> {
    let docker = &checked.docker;
    let source = &checked.source;
    // Beside the stack file: relative paths in it resolve from its directory.
    // Named after this process: a deploy that runs on after a forced unlock
    // must not remove the jobs file of the deploy that took the lock from it.
    let file_name = source.path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let jobs_file = source.path.with_file_name(format!(".{file_name}.{}.jobs.yml", std::process::id()));
    let jobs_text = stackfile::only_services(&source.shown, &source.text, names)?;
    crate::interrupt::scratch_file(Some(jobs_file.clone()));
    ctx.write_file(&jobs_file, &jobs_text)?;
    // Never --prune here: this file holds only the jobs.
    let deployed = stack_deploy(ctx, stack, &jobs_file, false);
    ctx.remove(&jobs_file)?;
    crate::interrupt::scratch_file(None);
    deployed?;
    hand_over_specs(ctx, docker, stack);
    let watched: Vec<&str> = expected.iter().map(|want| want.name.as_str()).collect();
    let watch = format!("watch {} until done, timeout {}s", watched.join(", "), timeout.as_secs());
    match ctx.call(
        &watch,
        watch::Outcome::Planned,
        watch::until_converged(docker, stack, expected, before_updates, timeout),
    )? {
        watch::Outcome::Planned | watch::Outcome::Converged(_) => Ok(()),
        watch::Outcome::Failed { failed, waiting, .. } => {
            // Only the services that failed (or, on a timeout, did not finish).
            let stuck: Vec<&str> = if failed.is_empty() {
                waiting.iter().map(|(name, _)| name.as_str()).collect()
            } else {
                failed.iter().map(|(name, _)| name.as_str()).collect()
            };
            let headline = format!("{} {what}", stuck.join(" and "));
            Err(failure(ctx, docker, stack, &headline, &failed, &waiting))
        }
    }
}

/// What pre-flight found: the engine, the stack file's services, and where
/// their images are in the registry.
pub struct Checked {
    pub docker: bollard::Docker,
    /// The stack file, as pre-flight read it (the deploy reads it no more).
    pub source: stackfile::Source,
    pub services: Vec<stackfile::ServiceDef>,
    /// Image reference → digest in its registry.
    pub digests: HashMap<String, String>,
    /// Registry (`None`: Docker Hub's) → the credential the Docker config
    /// has for it, looked up once.
    pub credentials: HashMap<Option<String>, Option<bollard::auth::DockerCredentials>>,
    /// `<registry>/<repository>`: the release image, which the app and its
    /// jobs run (a database service beside them runs another).
    pub release_image: String,
}

impl Checked {
    fn runs_release(&self, service: &stackfile::ServiceDef) -> bool {
        crate::image_ref::ImageRef::parse(&service.image).name == self.release_image
    }

    /// The long-running service that runs the release: the app, whose image
    /// the history records (a stack file naming none: its first service).
    pub fn app(&self) -> Option<&stackfile::ServiceDef> {
        let long_running = |service: &&stackfile::ServiceDef| !service.one_shot;
        let services = &self.services;
        let release = services.iter().filter(long_running).find(|service| self.runs_release(service));
        release.or_else(|| services.iter().find(long_running)).or(services.first())
    }

    /// The job that runs the release (`migrate`), whose image's
    /// `todobackend migrations` tells what the release does to the database.
    fn release_job(&self) -> Option<&stackfile::ServiceDef> {
        let services = &self.services;
        services.iter().filter(|service| service.one_shot).find(|service| self.runs_release(service))
    }
}

/// Everything deploy checks before the swarm changes. Reads only.
fn preflight(ctx: &Ctx) -> Result<Checked> {
    let sh = ctx.sh();
    let source = stackfile::Source::read(ctx)?;
    let lookup = |name: &str| sh.var(name).ok();
    let services = stackfile::load(&source.shown, &source.text, &lookup)?;

    let externals = stackfile::externals(&source.shown, &source.text, &lookup)?;
    let docker = ctx.block_on(preflight::swarm_manager(ctx.docker_endpoint()))?;
    ctx.block_on(preflight::externals_exist(&docker, &externals))?;
    let labels = stackfile::label_constraints(&services);
    // A first deploy on a swarm of one node: that node keeps the data.
    if let Some(node) = ctx.block_on(preflight::unlabelled_sole_node(&docker, &labels))? {
        let wanted: Vec<String> = node.missing.iter().map(|(key, value)| format!("{key}={value}")).collect();
        let description = format!("label the swarm's only node, {}, with {}", node.name, wanted.join(", "));
        ctx.call(&description, (), preflight::label_sole_node(&docker, &node))?;
        ctx.report(&format!(
            "labelled the swarm's only node, {}, with {}: it keeps the stack's data",
            node.name,
            wanted.join(", ")
        ));
    } else {
        for warning in ctx.block_on(preflight::placement_labels(&docker, &labels))? {
            ctx.warn(&warning);
        }
    }

    let images: BTreeSet<&str> = services.iter().map(|service| service.image.as_str()).collect();
    let mut digests = HashMap::new();
    let mut credentials = HashMap::new();
    for image in images {
        let registry = crate::image_ref::ImageRef::parse(image).registry;
        let credential = match &registry {
            Some(registry) => crate::docker_config::credential(sh, registry)?,
            None => None,
        };
        let resolved = ctx.block_on(crate::registry::digest(&docker, image, credential.clone()));
        credentials.insert(registry, credential);
        // A dry run has not logged in (`login` only printed its plan), so
        // the registry may refuse it: the plan says so, and goes on.
        let what = format!("check {image} in its registry (a real deploy logs in first)");
        let digest = ctx.read_or_plan(&what, "unchecked".to_owned(), resolved)?;
        ctx.say(&format!("    {image}: {digest}"));
        digests.insert(image.to_owned(), digest);
    }
    Ok(Checked { docker, source, services, digests, credentials, release_image: ctx.settings.image_name() })
}

/// How long to retry `docker stack deploy` while a removed stack's network
/// is still going away.
const NETWORK_RACE: Duration = Duration::from_secs(60);

fn stack_deploy(ctx: &Ctx, stack: &str, file: &Path, prune: bool) -> Result<()> {
    let sh = ctx.sh();
    let prune = prune.then_some("--prune");
    let deploy = || cmd!(sh, "docker stack deploy --with-registry-auth {prune...} -c {file} {stack}");
    ctx.effect(&format!("$ {}", deploy()), (), || deploy_retrying_the_network_race(stack, deploy))
}

fn deploy_retrying_the_network_race<'a>(stack: &str, deploy: impl Fn() -> xshell::Cmd<'a>) -> Result<()> {
    let started = Instant::now();
    loop {
        let command = deploy();
        let line = command.to_string();
        let output = command.ignore_status().output().with_context(|| format!("cannot run `{line}`"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        xtask::output::raw(&format!("{stdout}{stderr}"));
        if output.status.success() {
            return Ok(());
        }
        if network_race(&stderr) && started.elapsed() < NETWORK_RACE {
            xtask::output::say(&format!(
                "    the network of a removed stack {stack} is still going away: retrying in 2s"
            ));
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no error output");
        bail!("`{line}` failed: {}", last.trim());
    }
}

/// "network todobackend_net not found" (or "... is being removed") right
/// after `docker stack rm` of the same stack.
fn network_race(stderr: &str) -> bool {
    stderr.lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.contains("network") && (line.contains("not found") || line.contains("is being removed"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_race_is_recognised() {
        assert!(network_race("failed to create service t_app: Error response from daemon: network t_net not found\n"));
        assert!(!network_race("image not found"));
        assert!(!network_race("Error response from daemon: rpc error: code = InvalidArgument"));
    }
}
