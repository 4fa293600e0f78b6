//! The command line, in one place: every task with its arguments (their
//! doc comments are the help), the settings flags each task takes, and the
//! parsing. The task modules read their arguments from here; the runner
//! (`runner.rs`) runs what was parsed.
//!
//! The split into two binaries is a type: a [`LightTask`] runs in the
//! `xtask` binary (no AWS SDK, no Docker engine API), a [`CloudTask`] in
//! `xtask-cloud`.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args as _, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::exit::{self, Exit};
use crate::settings;

/// The delivery workflow of todobackend: build, test, release, publish, deploy.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", disable_version_flag = true, after_help = exit::HELP)]
pub struct Cli {
    #[command(flatten)]
    pub settings: settings::Args,
    #[command(subcommand)]
    pub task: Task,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Task {
    #[command(flatten)]
    Light(LightTask),
    #[command(flatten)]
    Cloud(CloudTask),
}

/// Tasks that need neither AWS nor the Docker engine API: the `xtask` binary
/// that `cargo xtask` runs has them all.
#[derive(Subcommand, Debug, Clone)]
pub enum LightTask {
    #[command(flatten)]
    Print(PrintTask),
    /// Build the release image from a static build of the service, and its SBOM (`<version>.sbom`).
    Build,
    /// Run the service's tests and build the release image.
    Test,
    /// Start the local environment from the built image and run acceptance tests.
    Release(Deferred<ReleaseArgs>),
    /// Remove the local environment, its volumes and dangling project images.
    Clean,
    /// Write the command reference (docs/src/reference, docs/man) from this command line, then build the book.
    Docs,
}

/// Light tasks whose whole effect is a result on stdout: they read no
/// settings, talk to no engine and run no command, so they run on the
/// command line's output flags alone, before delivery.yml is read or a
/// context is built (`runner::main_with`). `version` runs on every build and
/// must answer within 2x `git rev-parse` (the book: Performance).
#[derive(Subcommand, Debug, Clone)]
pub enum PrintTask {
    /// Print {"Version": "<APP_VERSION>"} (APP_VERSION, else the git short hash).
    Version,
    /// Print the shell completion script for bash, zsh or fish (the book: Configuration, Completions).
    Completions(Deferred<CompletionsArgs>),
}

/// Tasks that call AWS or the Docker engine API: they run in `xtask-cloud`,
/// built the first time one of them is asked for, so that the light tasks
/// never compile or load the AWS SDK and bollard.
#[derive(Subcommand, Debug, Clone)]
pub enum CloudTask {
    /// Log Docker in to the ECR registry.
    Login,
    /// Log Docker out of the ECR registry.
    Logout,
    /// Push the release image as `latest` and as APP_VERSION, and its SBOM as `<APP_VERSION>.sbom`.
    Publish(Deferred<PublishArgs>),
    /// Deploy stack.yml to Docker Swarm and wait until it converges.
    Deploy(Deferred<DeployArgs>),
    /// The CI pipeline: login, test, release, publish, version file; then clean and logout.
    Ci(Deferred<CiArgs>),
    /// Redeploy the last version that converged before the current one (or --to VERSION).
    Rollback(Deferred<RollbackArgs>),
    /// The stack's deploys and rollbacks, newest first, as the swarm records them.
    History(Deferred<HistoryArgs>),
    /// Show who holds the stack's deploy lock, and remove it (after a killed deploy).
    Unlock(Deferred<UnlockArgs>),
    /// Each service of the stack: version, replicas, update state, drift; exit 0 when converged, 3 when not, 1 on drift.
    Status(Deferred<StatusArgs>),
    /// The stack's logs, each line prefixed with its service and task version.
    Logs(Deferred<LogsArgs>),
    /// Swarm secrets for the stack file: `secret create NAME < value-file`.
    Secret(Deferred<SecretArgs>),
    /// Log in, then hand the stack's services a fresh ECR credential (tokens last 12 hours), by a rolling update.
    RefreshAuth,
    /// What a deploy would change, per service and field, against what the swarm runs now.
    Plan(Deferred<PlanArgs>),
}

impl Task {
    /// The task's name on the command line. clap names each task after its
    /// variant in kebab-case (`RefreshAuth` is `refresh-auth`); this applies
    /// the same rule to the variant's name, so that no list of names has to
    /// be kept beside the enums (a test checks it against every task clap
    /// lists).
    pub fn name(&self) -> String {
        let debug = match self {
            Task::Light(LightTask::Print(task)) => format!("{task:?}"),
            Task::Light(task) => format!("{task:?}"),
            Task::Cloud(task) => format!("{task:?}"),
        };
        let variant = debug.split(|c: char| !c.is_ascii_alphanumeric()).next().unwrap_or_default();
        let mut name = String::new();
        for (i, c) in variant.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                name.push('-');
            }
            name.push(c.to_ascii_lowercase());
        }
        name
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ReleaseArgs {
    /// Use the images already built (by `test` or `build`) instead of building first.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// Publish a version built from uncommitted changes (APP_VERSION ending in -dirty).
    #[arg(long)]
    pub allow_dirty: bool,

    /// Create the ECR repository when DescribeRepositories says it is missing.
    #[arg(long, env = "ECR_CREATE_REPOSITORY")]
    pub create_repository: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DeployArgs {
    /// Do not run `login` first.
    #[arg(long)]
    pub no_login: bool,

    /// Return once the stack is deployed, without waiting for it to converge.
    #[arg(long)]
    pub detach: bool,

    /// How long to wait for the services to converge: 300, 90s, 5m, 1h. On
    /// the timeout the deploy exits 3 and leaves the swarm's update running,
    /// not rolled back: the version is unverified (`status` exits 3 and says
    /// so) until a deploy of it again verifies it.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = settings::parse_duration)]
    pub timeout: Duration,

    /// Deploy even if the new version applies a migration not marked `-- additive`
    /// (if the deploy then fails, the service is down: exit 4, and the error
    /// names the `rollback --restore-data` that brings it back).
    #[arg(long)]
    pub allow_breaking_migration: bool,

    /// Wait up to DURATION for another task's deploy lock instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = settings::parse_duration)]
    pub lock_wait: Option<Duration>,

    /// Remove the stack's services that the stack file no longer has.
    #[arg(long)]
    pub prune: bool,

    /// Do not run the verify suite (delivery.yml's `verify`) against the new
    /// version before recording it as converged; the history says so.
    #[arg(long)]
    pub no_verify: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RollbackArgs {
    /// The version to go back to [default: the last one that converged before the current one].
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,

    /// If that version cannot serve the current database, restore the newest
    /// backup taken before the migration it cannot live with.
    #[arg(long)]
    pub restore_data: bool,

    /// Do not run `login` first.
    #[arg(long)]
    pub no_login: bool,

    /// How long to wait for the services to converge: 300, 90s, 5m, 1h.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = settings::parse_duration)]
    pub timeout: Duration,

    /// Wait up to DURATION for another task's deploy lock instead of failing at once.
    #[arg(long, value_name = "DURATION", value_parser = settings::parse_duration)]
    pub lock_wait: Option<Duration>,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,

    /// Exit 0 even when a service was changed outside the xtask since the last deploy.
    #[arg(long)]
    pub allow_drift: bool,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogsArgs {
    /// Only this service of the stack (`app`, `migrate`, ...) [default: all].
    pub service: Option<String>,

    /// Lines from the end of each service's logs.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,

    /// Only lines newer than DURATION: 10m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = settings::parse_duration)]
    pub since: Option<Duration>,

    /// Keep printing new lines until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,

    /// Show when the engine received each line (RFC 3339, UTC), after the prefix.
    #[arg(long, short)]
    pub timestamps: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub action: SecretAction,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SecretAction {
    /// Create the secret NAME from stdin (never argv); an existing NAME is refused.
    Create {
        /// The secret's name in the swarm, as the stack file names it.
        name: String,
    },
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct UnlockArgs {
    /// Remove the lock even though its holder's process still runs on this host.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct PlanArgs {
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,

    /// Exit 2 when the deploy would change something, 0 when not (a usage error then exits 64).
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct HistoryArgs {
    /// Print the entries as a JSON array.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct CiArgs {
    /// Where to write {"Version": "<APP_VERSION>"} [default: version.json at the project root].
    #[arg(long, value_name = "PATH")]
    pub version_file: Option<PathBuf>,
}

/// The settings flags a task uses (`settings::used`), by the task's name on
/// the command line: its help lists those under "Settings", and it accepts
/// no others after its name. `None` for a name that is no task (a test
/// checks that every task has its entry).
pub fn settings_used(task: &str) -> Option<Vec<&'static str>> {
    use settings::used::*;
    let groups: &[&[&str]] = match task {
        "version" | "completions" | "docs" => &[],
        "build" | "test" => &[IMAGE],
        "release" => &[IMAGE, COMPOSE],
        "ci" => &[IMAGE, AWS, COMPOSE],
        "clean" => &[COMPOSE],
        "login" | "logout" => &[REGISTRY, AWS],
        "publish" => &[IMAGE, AWS],
        "deploy" | "rollback" | "plan" => &[IMAGE, AWS, STACK_FILE],
        "refresh-auth" => &[REGISTRY, AWS, STACK],
        "history" | "unlock" | "status" | "logs" | "secret" => &[STACK],
        _ => return None,
    };
    // Every task that reads delivery.yml's settings takes --env.
    let env: &[&str] = if groups.is_empty() { &[] } else { ENV };
    Some(OUTPUT.iter().chain(env).chain(groups.iter().copied().flatten()).copied().collect())
}

/// The command line: the tasks, and the settings flags both before a task's
/// name (all of them) and after it (those the task uses: `cargo xtask
/// --dry-run deploy`, `cargo xtask deploy --dry-run`). clap's `global` flags
/// would copy every flag into every task's command at start-up, a third of
/// what `version` cost; instead each task gets its own copy, and its own
/// arguments, when clap reaches it (`defer`: [`with_settings`],
/// [`Deferred`]), so only the task that runs pays for them. Every other
/// task is its name and its line of help.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommands(|task| task.defer(complete_task))
}

/// [`command`] with every task complete from the start, as a generator that
/// walks them all needs it: clap derives the `help` task's own tasks
/// (`help secret create`) from the tasks as they stand before any deferred
/// part is added.
pub fn full_command() -> clap::Command {
    Cli::command().mut_subcommands(complete_task)
}

/// The task's command as clap reaches it: its own arguments ([`Deferred`])
/// and the settings flags it uses ([`settings_used`]).
fn complete_task(task: clap::Command) -> clap::Command {
    let own_arguments =
        OWN_ARGUMENTS.with_borrow(|tasks| tasks.iter().find(|(name, _)| name == task.get_name()).map(|(_, add)| *add));
    let task = match own_arguments {
        Some(add) => add(task),
        None => task,
    };
    let task = match exit::task_help(task.get_name()) {
        Some(codes) => task.after_help(codes),
        None => task,
    };
    let used = settings_used(task.get_name()).unwrap_or_default();
    add_settings(task, &used)
}

/// What adds a task's own arguments to its command (`T::augment_args`).
type AddArguments = fn(clap::Command) -> clap::Command;

thread_local! {
    /// Each task's way to add its own arguments, by the task's name: put
    /// here by [`Deferred`] as clap's derive builds the command line, and
    /// called by [`complete_task`] for the task clap reaches.
    static OWN_ARGUMENTS: std::cell::RefCell<Vec<(String, AddArguments)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A task's arguments `T`, added to its command only when clap reaches the
/// task ([`complete_task`]): clap's derive builds every task's arguments
/// whenever the command line is read, and all but the running task's were
/// a tenth of what `version` cost (the book: Performance). Read through
/// `Deref`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deferred<T>(pub T);

impl<T> std::ops::Deref for Deferred<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: clap::Args> clap::Args for Deferred<T> {
    fn augment_args(task: clap::Command) -> clap::Command {
        let name = task.get_name().to_owned();
        OWN_ARGUMENTS.with_borrow_mut(|tasks| {
            tasks.retain(|(known, _)| *known != name);
            tasks.push((name, T::augment_args));
        });
        task
    }
    fn augment_args_for_update(task: clap::Command) -> clap::Command {
        T::augment_args_for_update(task)
    }
}

impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(matches).map(Deferred)
    }
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

/// `task` with the settings flags of `used`, under the Settings heading.
fn add_settings(mut task: clap::Command, used: &[&str]) -> clap::Command {
    let all = settings::Args::augment_args(clap::Command::new("settings"));
    for arg in all.get_arguments().filter(|arg| used.contains(&arg.get_id().as_str())) {
        task = task.arg(arg.clone());
    }
    // A task's own subcommands (`secret create`) take the task's settings.
    task.mut_subcommands(|sub| add_settings(sub, used))
}

/// Parse `argv` with [`command`]: a settings flag written after the task's
/// name wins over one before it.
pub fn parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    let used = settings_used(&cli.task.name()).unwrap_or_default();
    let mut level = &matches;
    while let Some((_, task)) = level.subcommand() {
        let later = settings::Args::from_matches(task, &used);
        cli.settings
            .override_with(later, |id| used.contains(&id) && task.value_source(id) == Some(ValueSource::CommandLine));
        level = task;
    }
    Ok(cli)
}

/// The command line, or exit: help as clap prints it; a usage error as one
/// line (`error: ...`), exit code 2 ([`Exit::Usage`]), like other command-line tools.
pub fn parse() -> Cli {
    use clap::error::ErrorKind;
    match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            err.exit()
        }
        Err(err) => {
            let text = err.to_string();
            let first = text.lines().next().unwrap_or("error: the command line is not valid");
            crate::output::say(&format!("{first} (see `cargo xtask --help`)"));
            // `plan --exit-code` exits 2 for "changes": there a usage error
            // must not read as one.
            let exit_code_asked = std::env::args_os().any(|arg| arg == "--exit-code");
            std::process::exit(if exit_code_asked {
                exit::USAGE_WITH_EXIT_CODE.into()
            } else {
                Exit::Usage.code().into()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_flags_stand_before_or_after_the_task_and_the_later_one_wins() {
        let parse = |argv: &[&str]| parse_from(std::iter::once("cargo xtask").chain(argv.iter().copied())).unwrap();
        assert!(parse(&["--dry-run", "version"]).settings.dry_run);
        assert!(parse(&["version", "--dry-run"]).settings.dry_run);
        assert!(!parse(&["version"]).settings.dry_run);
        // A flag written before the task is not undone by the task's own copy.
        assert!(parse(&["--dry-run", "deploy", "--no-login"]).settings.dry_run);
        assert!(parse(&["secret", "create", "db_password", "--dry-run"]).settings.dry_run);
        let stack = |argv: &[&str]| parse(argv).settings.stack;
        assert_eq!(stack(&["--stack", "a", "deploy"]).as_deref(), Some("a"));
        assert_eq!(stack(&["deploy", "--stack", "b"]).as_deref(), Some("b"));
        assert_eq!(stack(&["--stack", "a", "deploy", "--stack", "b"]).as_deref(), Some("b"));
        assert_eq!(
            stack(&["--stack", "a", "secret", "--stack", "b", "create", "x", "--stack", "c"]).as_deref(),
            Some("c")
        );
        assert_eq!(stack(&["--stack", "a", "secret", "--stack", "b", "create", "x"]).as_deref(), Some("b"));
        // The task's own flags parse beside them.
        let cli = parse(&["deploy", "--timeout", "90s", "--registry", "127.0.0.1:5000", "--lock-wait", "1m"]);
        assert_eq!(cli.settings.registry.as_deref(), Some("127.0.0.1:5000"));
        let Task::Cloud(CloudTask::Deploy(deploy)) = cli.task else { panic!("not deploy: {:?}", cli.task) };
        assert_eq!((deploy.timeout, deploy.lock_wait), (Duration::from_secs(90), Some(Duration::from_secs(60))));
        // A settings flag is no task's positional value.
        assert!(parse_from(["cargo xtask", "logs", "--tail", "--dry-run"]).is_err());
    }

    #[test]
    fn every_task_names_the_settings_it_uses_and_they_exist() {
        let all: Vec<String> = settings::Args::augment_args(clap::Command::new("settings"))
            .get_arguments()
            .map(|arg| arg.get_id().to_string())
            .collect();
        for task in command().get_subcommands() {
            let used = settings_used(task.get_name())
                .unwrap_or_else(|| panic!("{} has no entry in settings_used", task.get_name()));
            for id in used {
                assert!(all.iter().any(|known| known == id), "{}: no setting {id}", task.get_name());
            }
        }
        // deploy does not list the local environment's settings.
        assert!(!settings_used("deploy").unwrap().contains(&"compose_file"));
        assert!(settings_used("clean").unwrap().contains(&"compose_file"));
    }

    #[test]
    fn every_task_lists_its_exit_codes_in_its_help() {
        let mut command = command();
        command.build();
        // clap's own `help` subcommand is no task.
        for task in command.get_subcommands().filter(|task| task.get_name() != "help") {
            let codes = exit::of_task(task.get_name())
                .unwrap_or_else(|| panic!("{} has no entry in exit::of_task", task.get_name()));
            assert_eq!(codes.first().map(|code| code.0), Some(0), "{}", task.get_name());
            let help = task.clone().render_long_help().to_string();
            let table = help.split_once("Exit codes:").unwrap_or_else(|| panic!("{}:\n{help}", task.get_name())).1;
            for (code, _) in codes {
                assert!(table.contains(&format!("  {code} ")), "{}: {code} not in\n{table}", task.get_name());
            }
        }
        // What status's code says (xtask-cloud/src/status.rs): 3 not converged, 1 drift.
        let status = exit::of_task("status").unwrap();
        assert!(
            status
                .iter()
                .any(|(code, meaning)| *code == Exit::NotConverged.code() && meaning.contains("not converged"))
        );
        assert!(status.iter().any(|(code, meaning)| *code == 1 && meaning.contains("drift")));
    }

    #[test]
    fn quiet_and_verbose_stand_anywhere_and_the_later_wins() {
        let parse = |argv: &[&str]| parse_from(std::iter::once("cargo xtask").chain(argv.iter().copied())).unwrap();
        let cli = parse(&["-q", "deploy"]);
        assert!(cli.settings.quiet && !cli.settings.verbose);
        let cli = parse(&["-q", "deploy", "-v"]);
        assert!(!cli.settings.quiet && cli.settings.verbose);
        let cli = parse(&["--verbose", "status", "--quiet"]);
        assert!(cli.settings.quiet && !cli.settings.verbose);
        assert!(parse_from(["cargo xtask", "status", "-q", "-v"]).is_err());
        // Only the settings a task uses stand after its name.
        assert!(parse_from(["cargo xtask", "deploy", "--compose-file", "x"]).is_err());
        assert!(parse_from(["cargo xtask", "--compose-file", "x", "deploy"]).is_ok());
    }

    /// What clap reaches lazily is what the completions' full command has:
    /// each task's own arguments and its settings, its own tasks' too.
    #[test]
    fn every_task_is_complete_when_clap_reaches_it() {
        fn arguments(task: &clap::Command, path: &str, into: &mut Vec<String>) {
            let path = format!("{path} {}", task.get_name());
            into.extend(task.get_arguments().map(|arg| format!("{path}: {}", arg.get_id())));
            for sub in task.get_subcommands().filter(|sub| sub.get_name() != "help") {
                arguments(sub, &path, into);
            }
        }
        let (mut lazy, mut full) = (command(), full_command());
        lazy.build();
        full.build();
        let (mut reached, mut complete) = (Vec::new(), Vec::new());
        arguments(&lazy, "", &mut reached);
        arguments(&full, "", &mut complete);
        assert_eq!(reached, complete);
        for task in lazy.get_subcommands().filter(|task| task.get_name() != "help") {
            assert!(task.get_arguments().any(|arg| arg.get_id() == "dry_run"), "{} has no --dry-run", task.get_name());
        }
        assert!(reached.iter().any(|arg| arg == " cargo xtask deploy: lock_wait"), "{reached:?}");
        assert!(reached.iter().any(|arg| arg == " cargo xtask secret create: name"), "{reached:?}");
    }

    #[test]
    fn every_task_on_the_command_line_has_its_own_name() {
        let command = command();
        let listed: Vec<&str> = command.get_subcommands().map(|sub| sub.get_name()).collect();
        for name in &listed {
            let cli = parse_from(["cargo xtask", name]);
            // Tasks with required arguments cannot parse bare; the others
            // must come back under the name the command line gave them.
            if let Ok(cli) = cli {
                assert_eq!(cli.task.name(), *name);
            }
        }
        for task in ["version", "deploy", "rollback", "history", "status", "logs", "unlock", "secret", "refresh-auth"] {
            assert!(listed.contains(&task), "`cargo xtask --help` does not list {task}: {listed:?}");
        }
    }
}
