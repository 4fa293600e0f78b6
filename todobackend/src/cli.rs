//! Command line: parsing argv (lexopt splits the words; the commands, their
//! options, defaults from the environment and the help text are written
//! here, since clap would cost its builder on the service's cold build: the
//! measured figures are in docs/src/service.md) and running each
//! subcommand. Every failure comes back as one line of text for `main` to
//! print as `error: ...`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::http::static_files::Outcome;
use crate::http::{server, static_files};
use crate::store::Database;
use crate::store::catalog::{MIGRATIONS, PG_MIGRATIONS};
use crate::store::sqlite::{self as db, backups, migrate as migrations};
use crate::store::{backups as shared_backups, catalog, postgres as pg};
use crate::{acceptance, client, net, signals};

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8000";
pub const DEFAULT_DB: &str = "/data/todobackend.sqlite3";
pub const DEFAULT_STATIC_ROOT: &str = "/public";

/// How long `healthcheck` waits for the answer, all included.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub const USAGE: &str = "\
todobackend: the Todo-Backend API over SQLite or PostgreSQL

usage: todobackend <command> [options]

database: SQLite at --db / TODOBACKEND_DB, unless TODOBACKEND_DATABASE_URL=postgres://USER@HOST:PORT/DB
  (?sslmode=verify-full|verify-ca|require|prefer|disable&channel_binding=require|prefer|disable)
  selects PostgreSQL; its password is read from the file named by TODOBACKEND_DATABASE_PASSWORD_FILE,
  the roots that sign the server's certificate from TODOBACKEND_DATABASE_CA_FILE (PEM; with it,
  verify-full and channel_binding=require are the defaults). Every command below works on both.

commands:
  serve          serve the HTTP API (refuses to start while migrations are pending or changed)
                   --listen ADDR       IP:PORT to listen on   [env TODOBACKEND_LISTEN, default 0.0.0.0:8000]
                   --db PATH           SQLite database file   [env TODOBACKEND_DB, default /data/todobackend.sqlite3]
                   --static-root DIR   served under /static/  [env TODOBACKEND_STATIC_ROOT, default /public]
  migrate        apply pending database migrations (idempotent; refuses if an applied one was changed);
                 backs the database up first   [backups: env TODOBACKEND_BACKUPS, default backups/ beside it]
                 on PostgreSQL, waits for the database to come up  [env TODOBACKEND_DATABASE_WAIT, default 60 s]
                   --db PATH
  migrations     which migrations this binary has, which are applied, and whether it can serve the database
                   --db PATH  --json
  backups        list the backups, newest first
                   --db PATH  --json
  restore        restore the newest backup taken before a migration (the current database is kept as a backup)
                   --db PATH  --before MIGRATION  --dry-run
  move-to-postgres  copy every row of a SQLite database into the empty PostgreSQL database of
                 TODOBACKEND_DATABASE_URL (migrated first; ids kept, counts verified)
                   --from PATH         the SQLite database file
  collectstatic  copy the bundled static files into the static root (idempotent)
                   --static-root DIR
  healthcheck    exit 0 if GET /healthz on the local server answers 200 within 3 s
                   --listen ADDR       the server's listen address; its port is used
  acceptance     run the acceptance suite against a running server (deletes all todos!)
                   --url URL           e.g. http://127.0.0.1:8000 (plain http only)
                   --keep-data         leave the other todos alone: only the suite's own are
                                       written and deleted (what `deploy` runs against a live stack)
  help           show this text
  version        show the version
";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve { listen: String, db: PathBuf, static_root: PathBuf },
    Migrate { db: PathBuf, backups: PathBuf },
    Migrations { db: PathBuf, json: bool },
    Backups { db: PathBuf, backups: PathBuf, json: bool },
    Restore { db: PathBuf, backups: PathBuf, before: String, dry_run: bool },
    MoveToPostgres { from: PathBuf },
    CollectStatic { static_root: PathBuf },
    Healthcheck { listen: String },
    Acceptance { url: String, keep_data: bool },
    Help,
    Version,
}

/// Flags given on the command line, before defaults are filled in.
#[derive(Default)]
struct Flags {
    listen: Option<String>,
    db: Option<String>,
    static_root: Option<String>,
    url: Option<String>,
    before: Option<String>,
    from: Option<String>,
    json: bool,
    dry_run: bool,
    keep_data: bool,
}

/// Parses the arguments (without the program name). `env` looks up
/// environment variables; it is a parameter so tests need not change the
/// process environment. Flags win over the environment, which wins over the
/// defaults; an empty variable counts as unset.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Command, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err("no command given; run `todobackend help` for usage".into());
    };
    let allowed: &[&str] = match command.as_str() {
        "serve" => &["--listen", "--db", "--static-root"],
        "migrate" => &["--db"],
        "migrations" => &["--db", "--json"],
        "backups" => &["--db", "--json"],
        "restore" => &["--db", "--before", "--dry-run"],
        "move-to-postgres" => &["--from"],
        "collectstatic" => &["--static-root"],
        "healthcheck" => &["--listen"],
        "acceptance" => &["--url", "--keep-data"],
        "help" | "-h" | "--help" => return Ok(Command::Help),
        "version" | "-V" | "--version" => return Ok(Command::Version),
        other => return Err(format!("unknown command '{other}'; run `todobackend help` for usage")),
    };

    // lexopt splits the words (`--db PATH`, `--db=PATH`, a value after a
    // switch); which options a command takes, and the messages, are ours.
    let mut flags = Flags::default();
    let mut parser = lexopt::Parser::from_args(rest.iter().cloned());
    let bad = |e: lexopt::Error| e.to_string();
    while let Some(arg) = parser.next().map_err(bad)? {
        let name = match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => return Ok(Command::Help),
            lexopt::Arg::Long(long) => format!("--{long}"),
            lexopt::Arg::Short(short) => format!("-{short}"),
            lexopt::Arg::Value(value) => {
                return Err(format!("unexpected argument '{}' for {command}", value.to_string_lossy()));
            }
        };
        if !allowed.contains(&name.as_str()) {
            return Err(format!("unknown option '{name}' for {command} (it takes: {})", allowed.join(", ")));
        }
        // Switches take no value.
        if let Some(switch) = match name.as_str() {
            "--json" => Some(&mut flags.json),
            "--keep-data" => Some(&mut flags.keep_data),
            "--dry-run" => Some(&mut flags.dry_run),
            _ => None,
        } {
            if parser.optional_value().is_some() {
                return Err(format!("option {name} takes no value"));
            }
            *switch = true;
            continue;
        }
        let value = match parser.value() {
            Ok(value) => value.into_string().map_err(|_| format!("option {name} needs a value in UTF-8"))?,
            Err(_) => return Err(format!("option {name} needs a value")),
        };
        if value.is_empty() {
            return Err(format!("option {name} needs a non-empty value"));
        }
        let slot = match name.as_str() {
            "--listen" => &mut flags.listen,
            "--db" => &mut flags.db,
            "--static-root" => &mut flags.static_root,
            "--before" => &mut flags.before,
            "--from" => &mut flags.from,
            _ => &mut flags.url,
        };
        *slot = Some(value);
    }

    let pick = |flag: Option<String>, var: &str, default: &str| -> String {
        flag.or_else(|| env(var).filter(|v| !v.is_empty())).unwrap_or_else(|| default.to_string())
    };
    Ok(match command.as_str() {
        "serve" => Command::Serve {
            listen: pick(flags.listen, "TODOBACKEND_LISTEN", DEFAULT_LISTEN),
            db: pick(flags.db, "TODOBACKEND_DB", DEFAULT_DB).into(),
            static_root: pick(flags.static_root, "TODOBACKEND_STATIC_ROOT", DEFAULT_STATIC_ROOT).into(),
        },
        "migrate" => {
            let db: PathBuf = pick(flags.db, "TODOBACKEND_DB", DEFAULT_DB).into();
            Command::Migrate { backups: backups::dir_for(&db, env), db }
        }
        "migrations" => {
            Command::Migrations { db: pick(flags.db, "TODOBACKEND_DB", DEFAULT_DB).into(), json: flags.json }
        }
        "backups" => {
            let db: PathBuf = pick(flags.db, "TODOBACKEND_DB", DEFAULT_DB).into();
            Command::Backups { backups: backups::dir_for(&db, env), db, json: flags.json }
        }
        "restore" => {
            let db: PathBuf = pick(flags.db, "TODOBACKEND_DB", DEFAULT_DB).into();
            let before = flags.before.ok_or("restore needs --before MIGRATION, e.g. --before 0003_add_x")?;
            Command::Restore { backups: backups::dir_for(&db, env), db, before, dry_run: flags.dry_run }
        }
        "move-to-postgres" => Command::MoveToPostgres {
            from: flags.from.ok_or("move-to-postgres needs --from PATH, the SQLite database file")?.into(),
        },
        "collectstatic" => Command::CollectStatic {
            static_root: pick(flags.static_root, "TODOBACKEND_STATIC_ROOT", DEFAULT_STATIC_ROOT).into(),
        },
        "healthcheck" => Command::Healthcheck { listen: pick(flags.listen, "TODOBACKEND_LISTEN", DEFAULT_LISTEN) },
        _ => Command::Acceptance {
            url: flags.url.ok_or("acceptance needs --url, e.g. --url http://127.0.0.1:8000")?,
            keep_data: flags.keep_data,
        },
    })
}

/// Runs a command. `Ok(true)`: success; `Ok(false)`: failure already
/// reported (failed acceptance checks); `Err`: one line to print.
pub fn run(command: Command) -> Result<bool, String> {
    let env = |name: &str| std::env::var(name).ok();
    let select = |db: &Path| Database::select(db, &env);
    match command {
        Command::Serve { listen, db, static_root } => serve(&listen, &select(&db)?, &static_root).map(|()| true),
        Command::Migrate { db, backups } => match select(&db)? {
            Database::Sqlite(db) => migrate_with(&db, &backups, MIGRATIONS).map(|()| true),
            Database::Postgres(target) => migrate_postgres(&target, PG_MIGRATIONS).map(|()| true),
        },
        Command::Migrations { db, json } => {
            let report = match select(&db)? {
                Database::Sqlite(db) => migrations::report(&db, MIGRATIONS)?,
                Database::Postgres(target) => pg::migrate::report(&target, PG_MIGRATIONS)?,
            };
            let text = if json { report.to_json() } else { report.table() };
            let _ = writeln!(std::io::stdout(), "{text}");
            Ok(true)
        }
        Command::Backups { db, backups, json } => match select(&db)? {
            Database::Sqlite(_) => list_backups(&shared_backups::list(&backups)?, &backups.display().to_string(), json),
            Database::Postgres(target) => {
                let conn = pg::client::Conn::connect(&target).map_err(|e| e.to_string())?;
                let found = pg::backups::list(&conn).map_err(pg::migrate::context(&target))?;
                list_backups(&found, &pg::backups::location(&target), json)
            }
        }
        .map(|()| true),
        Command::Restore { db, backups, before, dry_run } => match select(&db)? {
            Database::Sqlite(db) => restore(&db, &backups, &before, dry_run).map(|()| true),
            Database::Postgres(target) => restore_postgres(&target, &before, dry_run).map(|()| true),
        },
        Command::MoveToPostgres { from } => match Database::select(Path::new(""), &env)? {
            Database::Sqlite(_) => Err(format!(
                "move-to-postgres needs {}=postgres://USER@HOST:PORT/DB (and {}) naming the empty target database",
                pg::config::URL_VAR,
                pg::config::PASSWORD_FILE_VAR
            )),
            Database::Postgres(target) => move_to_postgres(&from, &target).map(|()| true),
        },
        Command::CollectStatic { static_root } => collectstatic(&static_root).map(|()| true),
        Command::Healthcheck { listen } => healthcheck(&listen).map(|()| true),
        Command::Acceptance { url, keep_data } => {
            let summary = if keep_data {
                acceptance::run_keeping_data(&url, &mut std::io::stderr())?
            } else {
                acceptance::run(&url, &mut std::io::stderr())?
            };
            Ok(summary.ok())
        }
        // Written without print!, which panics when stdout is a closed pipe.
        Command::Help => {
            let _ = std::io::stdout().write_all(USAGE.as_bytes());
            Ok(true)
        }
        Command::Version => {
            let _ = writeln!(std::io::stdout(), "todobackend {}", env!("CARGO_PKG_VERSION"));
            Ok(true)
        }
    }
}

/// `serve`: runs until SIGTERM or SIGINT, then drains (`/readyz` 503 while
/// everything else is served, for `TODOBACKEND_DRAIN`; a second signal cuts
/// it short), stops accepting, and finishes the requests in flight.
pub fn serve(listen: &str, database: &Database, static_root: &Path) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok();
    // TODOBACKEND_LOG=debug also logs the healthcheck's own requests.
    crate::logging::init(env("TODOBACKEND_LOG_FORMAT").as_deref(), env("TODOBACKEND_LOG").as_deref())?;
    let limits = server::Limits::from_env(&env)?;
    let mut stops = signals::install()?;
    let options = server::Options { access_log: true, limits };
    let handle = server::start_on(listen, database, static_root, options)?;
    tracing::info!(
        address = %handle.addr(),
        database = %database.describe(),
        static_root = %static_root.display(),
        header_timeout_ms = limits.header_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        body_timeout_ms = limits.body_timeout.as_millis() as u64,
        max_header_bytes = limits.max_header_bytes,
        max_connections = limits.max_connections,
        drain_ms = limits.drain.as_millis() as u64,
        shutdown_grace_ms = limits.shutdown_grace.as_millis() as u64,
        "serving on http://{}",
        handle.addr()
    );
    if !static_root.is_dir() {
        tracing::warn!(
            "static root {} does not exist; /static/ answers 404 until `todobackend collectstatic` has run",
            static_root.display()
        );
    }
    stops.wait();
    if !limits.drain.is_zero() {
        // Load balancers see /readyz fail and take this task out while it
        // still answers whatever they send meanwhile.
        handle.start_draining();
        tracing::info!(
            drain_ms = limits.drain.as_millis() as u64,
            "draining: /readyz answers 503, everything else is still served; a second signal stops at once"
        );
        let drain_started = std::time::Instant::now();
        let cut_short = stops.wait_for(limits.drain);
        tracing::info!(
            drained_ms = drain_started.elapsed().as_millis() as u64,
            cut_short,
            "{}",
            if cut_short { "drain cut short by a second signal" } else { "drain over" }
        );
    }
    tracing::info!("stopping: no new connections, finishing requests in progress");
    handle.shutdown();
    tracing::info!("stopped");
    Ok(())
}

/// `migrate`: applies the embedded migrations, backing up first.
pub fn migrate(db_path: &Path) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok();
    migrate_with(db_path, &backups::dir_for(db_path, &env), MIGRATIONS)
}

/// `migrate` with a given migration list (tests pass their own).
///
/// A database that already has a schema is backed up before any migration
/// is applied (a new one has nothing to lose); a failed backup applies
/// nothing. The backup is taken before the migration's transaction, since
/// SQLite cannot `VACUUM INTO` inside one: a `migrate` running at the same
/// time may apply the same migrations in between, and this one then finds
/// nothing to do.
pub fn migrate_with(db_path: &Path, backups_dir: &Path, list: &[catalog::Migration]) -> Result<(), String> {
    let mut conn = db::open_for_migrate(db_path)?;
    let current = migrations::current_version(&conn)?;
    let todo = migrations::pending(&conn, list)?;
    if let (true, Some(first)) = (current > 0, todo.first()) {
        let path = backups::before_migration(&conn, backups_dir, current, first.stem()).map_err(|e| {
            format!("{e}; no migration was applied: make the backups directory writable, or point TODOBACKEND_BACKUPS elsewhere")
        })?;
        say!("backed up the database to {}", path.display());
    }
    // The errors stand on their own (`migration 0001_x.sql failed: ...`);
    // the database is the one named by --db / TODOBACKEND_DB.
    let outcome = migrations::migrate(&mut conn, list)?;
    let version = migrations::current_version(&conn)?;
    say_migrated(&db_path.display().to_string(), &outcome, version, list.len());
    Ok(())
}

/// `migrate` on PostgreSQL (see `store::postgres::migrate::migrate`), saying the same.
pub fn migrate_postgres(target: &pg::config::Target, list: &[catalog::Migration]) -> Result<(), String> {
    let env = |name: &str| std::env::var(name).ok();
    let wait = pg::client::wait_from_env(&env)?;
    let conn = pg::client::Conn::connect_waiting(target, wait, |why| {
        say!("waiting for the database (up to {}s, {}): {why}", wait.as_secs(), pg::client::WAIT_VAR)
    })
    .map_err(|e| e.to_string())?;
    let migrated = pg::migrate::migrate(&conn, target, list)?;
    if let Some(backup) = &migrated.backup {
        say!("backed up the database to {backup} in {}", pg::backups::location(target));
    }
    say_migrated(&target.display(), &migrated.outcome, migrated.version, list.len());
    Ok(())
}

/// What `migrate` did, on stderr, the same for both backends.
fn say_migrated(database: &str, outcome: &catalog::Outcome, version: u32, list_len: usize) {
    if !outcome.newer.is_empty() {
        say!(
            "database {} is at schema {}, newer than this binary knows ({}): {} additive, so this binary can serve it; nothing to do",
            database,
            version,
            list_len,
            if outcome.newer.len() == 1 {
                format!("{} is", outcome.newer[0])
            } else {
                format!("{} are", outcome.newer.join(", "))
            }
        );
        return;
    }
    if !outcome.adopted.is_empty() {
        say!(
            "recorded the checksums of {} migration(s) applied before checksums were kept ({}); later edits to them will be refused",
            outcome.adopted.len(),
            outcome.adopted.join(", ")
        );
    }
    if outcome.applied.is_empty() {
        say!("no pending migrations: database {database} is up to date");
    } else {
        for name in &outcome.applied {
            say!("applied migration {name}");
        }
        say!("database {database} is now at version {list_len}");
    }
}

/// `backups`: the backups, newest first.
fn list_backups(found: &[shared_backups::Backup], location: &str, json: bool) -> Result<(), String> {
    let mut out = std::io::stdout();
    if json {
        let items: Vec<serde_json::Value> = found
            .iter()
            .map(|backup| {
                serde_json::json!({
                    "file": backup.file, "schema_version": backup.schema_version, "taken": backup.taken,
                    "before": backup.before, "kind": backup.kind(),
                })
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(items));
    } else if found.is_empty() {
        say!("no backups in {location}");
    } else {
        for backup in found {
            let _ = writeln!(
                out,
                "{}  schema {}  {}  {}",
                backup.taken_text(),
                backup.schema_version,
                backup.kind(),
                backup.file
            );
        }
    }
    Ok(())
}

/// What a restore loses, said before it happens (both backends).
fn announce_restore(chosen: &shared_backups::Backup, before: &str) {
    let migration = before.strip_suffix(".sql").unwrap_or(before);
    say!(
        "restoring {} (schema {}, taken {}): everything written since then is lost, including what {} and later migrations changed",
        chosen.file,
        chosen.schema_version,
        chosen.taken_text(),
        migration
    );
}

/// The JSON line a restore answers with on stdout, the same on both backends.
fn answer_restored(restored: &str, kept: Option<&str>, schema_version: u32) {
    let _ = writeln!(
        std::io::stdout(),
        "{}",
        serde_json::json!({ "restored": restored, "kept": kept, "schema_version": schema_version })
    );
}

/// `restore --before MIGRATION`: says what is lost, then restores.
fn restore(db: &Path, dir: &Path, before: &str, dry_run: bool) -> Result<(), String> {
    let found = shared_backups::list(dir)?;
    let chosen = shared_backups::newest_before(&found, before, dir)?;
    announce_restore(chosen, before);
    if dry_run {
        say!("dry run: nothing restored; the current database would be kept as a backup in {}", dir.display());
        return Ok(());
    }
    let restored = backups::restore(db, dir, before)?;
    say!("restored; the replaced database is kept as {}", restored.kept.display());
    let kept = restored.kept.file_name().map(|name| name.to_string_lossy().into_owned());
    answer_restored(&restored.restored.file, kept.as_deref(), restored.schema_version);
    Ok(())
}

/// `restore --before MIGRATION` on PostgreSQL: the same messages and the
/// same JSON line as on SQLite (`kept` is the replaced tables' backup).
fn restore_postgres(target: &pg::config::Target, before: &str, dry_run: bool) -> Result<(), String> {
    let conn = pg::client::Conn::connect(target).map_err(|e| e.to_string())?;
    let location = pg::backups::location(target);
    let found = pg::backups::list(&conn).map_err(pg::migrate::context(target))?;
    let chosen = shared_backups::newest_before(&found, before, Path::new(&location))?;
    announce_restore(chosen, before);
    if dry_run {
        say!("dry run: nothing restored; the current tables would be kept as a backup in {location}");
        return Ok(());
    }
    let restored = pg::backups::restore(&conn, before, Path::new(&location))?;
    say!("restored; the replaced tables are kept as the backup {} in {location}", restored.kept);
    answer_restored(&restored.restored.file, Some(&restored.kept), restored.schema_version);
    Ok(())
}

/// `move-to-postgres --from FILE`: see `store::postgres::moving`.
fn move_to_postgres(from: &Path, target: &pg::config::Target) -> Result<(), String> {
    let moved = pg::moving::run(from, target, MIGRATIONS, PG_MIGRATIONS)?;
    for (table, rows) in &moved.tables {
        say!("moved {rows} row(s) of {table}; the counts agree");
    }
    let tables: serde_json::Map<String, serde_json::Value> =
        moved.tables.iter().map(|(table, rows)| (table.clone(), serde_json::json!(rows))).collect();
    let _ = writeln!(std::io::stdout(), "{}", serde_json::json!({ "moved": tables }));
    Ok(())
}

/// `collectstatic`: writes the bundled files into the static root.
pub fn collectstatic(static_root: &Path) -> Result<(), String> {
    for (name, outcome) in static_files::collect(static_root)? {
        let verb = match outcome {
            Outcome::Copied => "copied",
            Outcome::Unchanged => "unchanged",
        };
        say!("{verb} {}", static_root.join(name).display());
    }
    Ok(())
}

/// `healthcheck`: GET /healthz (liveness) on the local server must answer
/// 200 in time. Not /readyz: the container's healthcheck restarts what fails
/// it, and a database briefly away would fail every replica at once.
pub fn healthcheck(listen: &str) -> Result<(), String> {
    let target = net::local_target(net::parse_listen(listen)?);
    let url = format!("http://{target}/healthz");
    let agent = [("User-Agent", server::HEALTHCHECK_AGENT)];
    let response =
        client::request("GET", &url, &agent, None, HEALTHCHECK_TIMEOUT).map_err(|e| format!("unhealthy: {e}"))?;
    if response.status != 200 {
        return Err(format!("unhealthy: GET {url} answered {}", response.status));
    }
    say!("healthy: GET {url} answered 200");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults() {
        assert_eq!(
            parse(&args("serve"), &no_env).unwrap(),
            Command::Serve {
                listen: DEFAULT_LISTEN.into(),
                db: DEFAULT_DB.into(),
                static_root: DEFAULT_STATIC_ROOT.into()
            }
        );
        assert_eq!(
            parse(&args("migrate"), &no_env).unwrap(),
            Command::Migrate { db: DEFAULT_DB.into(), backups: "/data/backups".into() }
        );
        assert_eq!(
            parse(&args("healthcheck"), &no_env).unwrap(),
            Command::Healthcheck { listen: DEFAULT_LISTEN.into() }
        );
    }

    #[test]
    fn flags_beat_env_beats_defaults() {
        let env = |name: &str| match name {
            "TODOBACKEND_DB" => Some("/env.db".to_string()),
            "TODOBACKEND_LISTEN" => Some("127.0.0.1:1".to_string()),
            "TODOBACKEND_STATIC_ROOT" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            parse(&args("serve --db /flag.db"), &env).unwrap(),
            Command::Serve {
                listen: "127.0.0.1:1".into(),
                db: "/flag.db".into(),
                static_root: DEFAULT_STATIC_ROOT.into()
            }
        );
        assert_eq!(
            parse(&args("healthcheck --listen=0.0.0.0:9"), &env).unwrap(),
            Command::Healthcheck { listen: "0.0.0.0:9".into() }
        );
        assert_eq!(
            parse(&args("migrate"), &env).unwrap(),
            Command::Migrate { db: "/env.db".into(), backups: "/backups".into() }
        );
    }

    #[test]
    fn acceptance_needs_url() {
        assert!(parse(&args("acceptance"), &no_env).unwrap_err().contains("--url"));
        assert_eq!(
            parse(&args("acceptance --url http://127.0.0.1:1"), &no_env).unwrap(),
            Command::Acceptance { url: "http://127.0.0.1:1".into(), keep_data: false }
        );
    }

    #[test]
    fn bad_command_lines_are_errors() {
        assert!(parse(&[], &no_env).is_err());
        assert!(parse(&args("frobnicate"), &no_env).unwrap_err().contains("unknown command"));
        assert!(parse(&args("migrate --listen 1"), &no_env).unwrap_err().contains("unknown option"));
        assert!(parse(&args("serve --db"), &no_env).unwrap_err().contains("needs a value"));
        assert!(parse(&args("serve extra"), &no_env).unwrap_err().contains("unexpected argument"));
        assert!(parse(&args("serve --db="), &no_env).is_err());
        assert!(parse(&args("migrations --json=yes"), &no_env).unwrap_err().contains("takes no value"));
        assert!(parse(&args("serve -x"), &no_env).unwrap_err().contains("unknown option '-x'"));
        assert_eq!(
            parse(&args("restore --before=0002_x --dry-run"), &no_env).unwrap(),
            Command::Restore {
                db: DEFAULT_DB.into(),
                backups: "/data/backups".into(),
                before: "0002_x".into(),
                dry_run: true
            }
        );
    }

    #[test]
    fn move_to_postgres_needs_the_sqlite_file() {
        assert!(parse(&args("move-to-postgres"), &no_env).unwrap_err().contains("--from"));
        assert_eq!(
            parse(&args("move-to-postgres --from /data/todobackend.sqlite3"), &no_env).unwrap(),
            Command::MoveToPostgres { from: "/data/todobackend.sqlite3".into() }
        );
        assert!(parse(&args("move-to-postgres --db x"), &no_env).unwrap_err().contains("unknown option"));
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&args("help"), &no_env).unwrap(), Command::Help);
        assert_eq!(parse(&args("serve --help"), &no_env).unwrap(), Command::Help);
        assert_eq!(parse(&args("--version"), &no_env).unwrap(), Command::Version);
    }
}
