//! `appschema-cli`: migrate every tenant schema, create and drop tenants.
//!
//! Configuration, strongest first: flags, `DATABASE_URL` (for the URL), then
//! `appschema.toml` in the working directory (`database_url`,
//! `migrations_dir`, `schema_files`), then the defaults (`migrations`,
//! `src/schema.rs`).

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use appschema_core::migrate::{Event, Migrator};
use appschema_core::{MigrationSet, PublicName, Scope, SearchPath};
use clap::{Parser, Subcommand};

mod citus_cmds;
mod dev_cmds;
mod domain_cmds;
mod dry_run;
mod logging;
mod migration_cmds;
mod ops_cmds;
mod progress;
mod provision_cmds;
mod revert_cmd;
mod schema_cmds;
mod transfer_cmds;

/// Schema-per-tenant multi-tenancy for Diesel on PostgreSQL.
// No `Debug`: it holds the database URL, password and all.
#[derive(Parser)]
#[command(
    name = "appschema-cli",
    version,
    about,
    after_help = "Examples:
  appschema-cli migrate --dry-run            # what would run, in order
  appschema-cli migrate                      # apply it to public and every tenant
  appschema-cli createschema acme.example.com --from spare
  appschema-cli status

Options come from the command line, else DATABASE_URL, else appschema.toml.
`appschema-cli <command> --help` shows each command's examples."
)]
struct Cli {
    /// The database (else `DATABASE_URL`, else `database_url` in appschema.toml).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// The schemas after a tenant's on its search_path: the shared schema,
    /// then extra ones (where extensions live), comma-separated; give the
    /// path the application's pools use. Migrations, new tenants, `exec` and
    /// `psql` run on it (else `APPSCHEMA_SEARCH_PATH`, else `search_path` in
    /// appschema.toml) [default: public].
    #[arg(
        long,
        env = "APPSCHEMA_SEARCH_PATH",
        global = true,
        value_name = "SCHEMAS"
    )]
    search_path: Option<String>,
    /// The diesel migrations directory [default: migrations].
    #[arg(long, global = true)]
    migrations_dir: Option<PathBuf>,
    /// A schema source file with `#[appschema::shared]`/`#[appschema::isolated]`
    /// modules; repeatable [default: src/schema.rs].
    #[arg(long = "schema-file", global = true)]
    schema_files: Vec<PathBuf>,
    /// Log appschema's spans and events to stderr: `-v` runs and tenant
    /// creations, `-vv` every schema's step with its duration, `-vvv` all
    /// (`RUST_LOG`, when set, filters instead).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Format of the `-v` log.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Applies pending migrations to the shared schema and every tenant.
    ///
    /// appschema's own tables first, then shared and isolated migrations in
    /// timeline order, to every tenant schema.
    #[command(after_help = "Examples:
  appschema-cli migrate --dry-run
  appschema-cli migrate --jobs 4
  appschema-cli migrate --tenant acme.example.com --tenant globex.example.com
  appschema-cli migrate --revert --dry-run      # what reverting the last migration would undo
  appschema-cli migrate --revert 2              # undo the last 2 migrations (down.sql, newest first)
  appschema-cli migrate --revert --to 2024-01-01-000000   # undo everything newer; run again to resume
  appschema-cli --schema-file src/schema/shared.rs --schema-file src/schema/tenant.rs migrate")]
    Migrate {
        /// Parallel workers for tenant schemas [default: number of CPUs].
        #[arg(long)]
        jobs: Option<usize>,
        /// Only this tenant (any of its public names); repeatable.
        #[arg(long = "tenant", value_name = "PUBLIC_NAME")]
        tenants: Vec<String>,
        /// Prints the plan (each migration and its schemas, in order) without applying it.
        #[arg(long)]
        dry_run: bool,
        /// Reads every tenant's tracking table instead of trusting the heads
        /// recorded in `appschema_heads`, and records them anew: after a
        /// tracking table was changed by other means (diesel CLI's
        /// `migration revert` on a tenant schema, a hand-written DELETE).
        #[arg(long)]
        recheck: bool,
        /// Records no heads (for benchmarks of what recording costs).
        #[arg(long, hide = true)]
        no_record_heads: bool,
        /// Undoes the last N migrations of the timeline (default 1), by
        /// version, whichever their scope: `down.sql`, newest first, in every
        /// tenant schema for an isolated migration, once in the shared schema
        /// for a shared one. With --dry-run, prints what it would undo.
        #[arg(long, value_name = "N", conflicts_with = "tenants")]
        revert: Option<Option<usize>>,
        /// With --revert: undoes every migration newer than VERSION (the
        /// directory name, or the version diesel records, up to the first
        /// `_`; `0` for everything); running it again resumes a revert that
        /// failed part way.
        #[arg(long, value_name = "VERSION", requires = "revert")]
        to: Option<String>,
    },
    /// Shows each schema's applied and pending migrations, behind-head first.
    #[command(after_help = "Examples:
  appschema-cli status
  appschema-cli status --json")]
    Status {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
        /// Reads every tenant's tracking table instead of trusting the
        /// recorded heads (see `migrate --recheck`).
        #[arg(long)]
        recheck: bool,
    },
    /// Writes the plan file an application embeds without the planner.
    ///
    /// Offline mode: each migration's version and scope, and a checksum of
    /// every file the plan depends on. Keep the file in the repository and
    /// run this again after changing a migration or a schema file; the
    /// application's `build.rs` calls
    /// `appschema_build::embed_prepared_migrations("appschema-plan.toml")`,
    /// which fails the build when the plan is out of date.
    #[command(after_help = "Examples:
  appschema-cli prepare && git add appschema-plan.toml
  appschema-cli prepare --check              # in CI: fails when the plan is out of date
  appschema-cli prepare --schema-file src/schema.rs --plan-file db/appschema-plan.toml")]
    Prepare {
        /// Where to write the plan; the migrations directory and the schema
        /// files must lie under its directory.
        #[arg(long, default_value = appschema_build::PLAN_FILE)]
        plan_file: PathBuf,
        /// Writes nothing; exits non-zero when the plan file is missing or
        /// out of date (for CI).
        #[arg(long)]
        check: bool,
    },
    /// Manages migration directories.
    #[command(after_help = "Examples:
  appschema-cli migration generate add_pgcrypto --scope shared
  appschema-cli migration generate create_orders --scope isolated")]
    Migration {
        #[command(subcommand)]
        command: MigrationCommand,
    },
    #[command(flatten)]
    Provision(provision_cmds::ProvisionCommand),
    #[command(flatten)]
    Citus(citus_cmds::CitusCommand),
    #[command(flatten)]
    Transfer(transfer_cmds::TransferCommand),
    #[command(flatten)]
    Ops(ops_cmds::OpsCommand),
    #[command(flatten)]
    Schema(schema_cmds::SchemaCommand),
    #[command(flatten)]
    Dev(dev_cmds::DevCommand),
    #[command(flatten)]
    Domain(domain_cmds::DomainCommands),
}

#[derive(Debug, Subcommand)]
enum MigrationCommand {
    /// Creates a migration directory.
    ///
    /// `<migrations-dir>/<timestamp>_<NAME>/` with up.sql, down.sql
    /// and a metadata.toml declaring the scope.
    #[command(after_help = "Examples:
  appschema-cli migration generate create_orders --scope isolated
  appschema-cli --migrations-dir db/migrations migration generate add_plans --scope shared")]
    Generate {
        /// The migration's name (letters, digits, `_`).
        name: String,
        /// Where it runs.
        #[arg(long, value_parser = ["shared", "isolated"])]
        scope: String,
    },
}

/// `appschema.toml`. No `Debug`: it may hold the database password.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    database_url: Option<String>,
    search_path: Option<String>,
    migrations_dir: Option<PathBuf>,
    schema_files: Option<Vec<PathBuf>>,
}

struct Config {
    database_url: Option<String>,
    search_path: SearchPath,
    migrations_dir: PathBuf,
    schema_files: Vec<PathBuf>,
}

impl Config {
    fn resolve(cli: &Cli) -> Result<Config> {
        let path = Path::new("appschema.toml");
        let file: FileConfig = if path.is_file() {
            let text = std::fs::read_to_string(path).context("failed to read `appschema.toml`")?;
            toml::from_str(&text).context("invalid `appschema.toml`")?
        } else {
            FileConfig::default()
        };
        let search_path = match cli.search_path.clone().or(file.search_path) {
            Some(text) => text.parse::<SearchPath>().with_context(|| {
                format!("invalid search path `{text}`: give the shared schema, then extra schemas, comma-separated (`public, extensions`)")
            })?,
            None => SearchPath::new(),
        };
        Ok(Config {
            database_url: cli.database_url.clone().or(file.database_url),
            search_path,
            migrations_dir: cli
                .migrations_dir
                .clone()
                .or(file.migrations_dir)
                .unwrap_or_else(|| "migrations".into()),
            schema_files: if cli.schema_files.is_empty() {
                file.schema_files
                    .unwrap_or_else(|| vec!["src/schema.rs".into()])
            } else {
                cli.schema_files.clone()
            },
        })
    }

    fn database_url(&self) -> Result<&str> {
        self.database_url.as_deref().context(
            "no database given: pass --database-url, set DATABASE_URL, or add database_url to appschema.toml",
        )
    }

    /// The planned migrations, carrying the search path new tenants'
    /// migrations run on.
    fn migrations(&self) -> Result<MigrationSet> {
        self.migrations_and_citus_notes().map(|(set, _)| set)
    }

    /// The planned migrations and what they mean on Citus.
    fn migrations_and_citus_notes(&self) -> Result<(MigrationSet, appschema_planner::CitusNotes)> {
        self.check_files()?;
        let base = std::env::current_dir().context("cannot read the working directory")?;
        appschema_planner::load_with_schema_files_and_citus_notes(
            &self.migrations_dir,
            &self.schema_files,
            &base,
        )
        .map(|(set, notes)| (set.with_search_path(self.search_path.clone()), notes))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("the migrations were refused before anything ran")
    }

    fn check_files(&self) -> Result<()> {
        if !self.migrations_dir.is_dir() {
            bail!(
                "migrations directory `{}` does not exist: pass --migrations-dir or create it",
                self.migrations_dir.display()
            );
        }
        for file in &self.schema_files {
            if !file.is_file() {
                bail!(
                    "schema file `{}` does not exist: pass --schema-file with the file holding your marked `table!` modules",
                    file.display()
                );
            }
        }
        Ok(())
    }
}

/// The exit code of a run that failed because the connection to the
/// database was lost or could not be had (`EX_TEMPFAIL` of sysexits.h):
/// trying again later may succeed, so a script or a job runner can retry.
const EXIT_TRANSIENT: u8 = 75;

/// What the CLI adds to an error caused by a lost connection.
const LOST_HINT: &str = "hint: the connection to the database was lost (a server restart, a \
     failover or a terminated backend): this is transient; run the command again once the \
     database accepts connections (exit code 75)";

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.log_format);
    let config = match Config::resolve(&cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let url = config.database_url.clone();
    match run(cli, config) {
        Ok(code) => code,
        Err(e) => {
            // Errors may quote the connection string (libpq does, for one
            // it cannot parse): never its password.
            let message = format!("{e:#}");
            let message = match &url {
                Some(url) => appschema_core::redact_secrets(&message, url),
                None => message,
            };
            eprintln!("error: {message}");
            if is_connection_lost(&e) {
                eprintln!("{LOST_HINT}");
                ExitCode::from(EXIT_TRANSIENT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether `error` (any cause in its chain) is a lost connection
/// (`appschema::connection::is_connection_lost`) or a database that could
/// not be reached.
fn is_connection_lost(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(e) = cause.downcast_ref::<diesel::result::Error>() {
            return appschema_core::connection::is_connection_lost(e);
        }
        if let Some(e) = cause.downcast_ref::<appschema_core::ConnectionError>() {
            return e.is_transient();
        }
        appschema_core::connection::is_connection_lost_message(&cause.to_string())
    })
}

fn run(cli: Cli, config: Config) -> Result<ExitCode> {
    match cli.command {
        Command::Migrate {
            jobs,
            tenants,
            dry_run,
            recheck,
            no_record_heads,
            revert,
            to,
        } => {
            let migrator = migrator(&config, jobs, &tenants)?
                .recheck(recheck)
                .record_heads(!no_record_heads);
            match revert {
                Some(n) => {
                    let to = revert_cmd::target(n, to.as_deref())?;
                    revert_cmd::revert(&config.migrations()?, migrator, &to, dry_run)
                }
                None => migrate(&config, migrator, dry_run),
            }
        }
        Command::Status { json, recheck } => status(&config, json, recheck),
        Command::Prepare { plan_file, check } => prepare(&config, &plan_file, check),
        Command::Migration {
            command: MigrationCommand::Generate { name, scope },
        } => migration_cmds::generate(&config.migrations_dir, &name, &scope),
        Command::Provision(command) => {
            provision_cmds::run(command, config.database_url()?, || config.migrations())
        }
        Command::Citus(command) => citus_cmds::run(command, config.database_url()?),
        Command::Domain(command) => domain_cmds::run(command, config.database_url()?),
        Command::Transfer(command) => {
            transfer_cmds::run(command, config.database_url()?, || config.migrations())
        }
        Command::Ops(command) => {
            ops_cmds::run(command, config.database_url()?, &config.search_path)
        }
        Command::Schema(command) => schema_cmds::run(command),
        Command::Dev(command) => dev_cmds::run(command),
    }
}

fn migrator(config: &Config, jobs: Option<usize>, tenants: &[String]) -> Result<Migrator> {
    // Spare schemas are kept at the isolated head along with the tenants.
    let mut m = Migrator::new(config.database_url()?)
        .search_path(config.search_path.clone())
        .schema_source("spares", Box::new(appschema_core::provision::spare_schemas));
    if let Some(j) = jobs {
        if j == 0 {
            bail!("--jobs must be at least 1");
        }
        m = m.jobs(j);
    }
    if !tenants.is_empty() {
        let names = tenants
            .iter()
            .map(|t| PublicName::new(t).with_context(|| format!("invalid --tenant `{t}`")))
            .collect::<Result<Vec<_>>>()?;
        m = m.only_tenants(names);
    }
    Ok(m)
}

fn migrate(config: &Config, migrator: Migrator, dry_run: bool) -> Result<ExitCode> {
    let (set, citus_notes) = config.migrations_and_citus_notes()?;
    // The set carries the planner's `citus_reference_tables`.
    if !citus_notes.warnings.is_empty() && on_citus(config)? {
        for warning in &citus_notes.warnings {
            eprintln!("warning: {warning}");
        }
    }
    if dry_run {
        let plan = migrator.plan(&set).context("cannot read what is pending")?;
        let tenants = dry_run::tenant_schemas(config.database_url()?, &migrator)?;
        dry_run::print(&set, &plan, tenants);
        return Ok(ExitCode::SUCCESS);
    }

    let progress = progress::Progress::new(false);
    let on_event = |e: Event| progress.migrate_event(progress::Direction::Apply, e);
    let report = migrator
        .migrate(&set, &on_event)
        .context("migrate could not run")?;
    progress.finish();
    println!(
        "{} schema(s) migrated, {} migration(s) applied, {} failure(s) in {:.2}s",
        report.schemas_migrated,
        report.migrations_applied,
        report.failures.len(),
        report.elapsed.as_secs_f64()
    );
    if report.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &report.failures {
        eprintln!("error: {f}");
    }
    if report.steps_skipped > 0 {
        eprintln!(
            "{} later step(s) not started: fix the failures above and run `appschema-cli migrate` again",
            report.steps_skipped
        );
    }
    // Each migration commits with its tracking row, per schema: a run cut
    // short by a lost connection resumes where it stopped.
    if report
        .failures
        .iter()
        .all(|f| appschema_core::connection::is_connection_lost_message(&f.to_string()))
    {
        eprintln!("{LOST_HINT}");
        return Ok(ExitCode::from(EXIT_TRANSIENT));
    }
    Ok(ExitCode::FAILURE)
}

/// Whether the database is a Citus coordinator.
fn on_citus(config: &Config) -> Result<bool> {
    let mut conn = <diesel::PgConnection as diesel::Connection>::establish(config.database_url()?)
        .context("cannot connect to the database")?;
    Ok(appschema_core::citus::is_citus(&mut conn)?)
}

/// On Citus, each distributed schema's node (`HOST:PORT`); empty elsewhere.
fn placements(config: &Config) -> Result<std::collections::BTreeMap<String, String>> {
    let mut conn = <diesel::PgConnection as diesel::Connection>::establish(config.database_url()?)
        .context("cannot connect to the database")?;
    Ok(appschema_core::citus::placements_by_schema(&mut conn)
        .context("cannot read where the tenants live")?
        .into_iter()
        .map(|(schema, node)| (schema, node.to_string()))
        .collect())
}

fn status(config: &Config, json: bool, recheck: bool) -> Result<ExitCode> {
    let set = config.migrations()?;
    let statuses = migrator(config, None, &[])?
        .recheck(recheck)
        .status(&set)
        .context("cannot read the schemas' migrations")?;
    let nodes = placements(config)?;
    if json {
        let value: Vec<serde_json::Value> = statuses
            .iter()
            .map(|s| {
                serde_json::json!({
                    "schema": s.schema,
                    "tenant": s.tenant,
                    "scope": s.scope.as_str(),
                    "applied": s.applied,
                    "pending": s.pending,
                    "misplaced": s.misplaced,
                    "node": nodes.get(&s.schema),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(ExitCode::SUCCESS);
    }
    for s in &statuses {
        if !s.misplaced.is_empty() {
            let other = match s.scope {
                Scope::Shared => "isolated",
                Scope::Isolated | Scope::Both => "shared",
            };
            eprintln!(
                "warning: {} schema `{}` has {} {other} migration(s) recorded ({}): they ran in the \
                 wrong schema, by `diesel migration run` or by hand; drop what they created there \
                 and delete their rows from `{}.__diesel_schema_migrations`, then use \
                 `appschema-cli migrate`",
                s.scope,
                s.schema,
                s.misplaced.len(),
                summarize(&s.misplaced),
                s.schema
            );
        }
    }
    if let Some(shared) = statuses.iter().find(|s| s.scope == Scope::Shared) {
        let misplaced = isolated_tables_in(config, &shared.schema)?;
        if !misplaced.is_empty() {
            eprintln!(
                "warning: isolated table(s) {} exist in the shared schema `{}`: `diesel migration \
                 run` applies every migration to `{}`; appschema creates isolated tables in each \
                 tenant's schema. Drop them there (after moving any data into a tenant) and run \
                 `appschema-cli migrate`",
                misplaced
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                shared.schema,
                shared.schema
            );
        }
    }
    if let Some(shared) = statuses.iter().find(|s| s.scope == Scope::Shared) {
        let tenants: Vec<String> = statuses
            .iter()
            .filter(|s| s.scope == Scope::Isolated)
            .map(|s| s.schema.to_string())
            .collect();
        for e in extensions_in_tenants(config, &tenants)? {
            eprintln!(
                "warning: extension `{}` is installed in the tenant schema `{}`: other tenants' \
                 paths do not find it, and dropping the tenant drops it; move it to the shared \
                 schema: {}",
                e.extension,
                e.schema,
                e.fix(&shared.schema)
            );
        }
    }
    for s in &statuses {
        let who = s
            .tenant
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        let state = if s.pending.is_empty() {
            "up to date".to_string()
        } else {
            format!("{} pending: {}", s.pending.len(), summarize(&s.pending))
        };
        let node = nodes
            .get(&s.schema)
            .map(|n| format!(" on {n}"))
            .unwrap_or_default();
        println!(
            "{} {}{who}{node}: {} applied, {state}",
            s.scope,
            s.schema,
            s.applied.len()
        );
    }
    revert_cmd::print_status(&set, migrator(config, None, &[])?.recheck(recheck));
    Ok(ExitCode::SUCCESS)
}

fn prepare(config: &Config, plan_file: &Path, check: bool) -> Result<ExitCode> {
    config.check_files()?;
    let base = std::env::current_dir().context("cannot read the working directory")?;
    let plan = appschema_planner::prepare(
        &config.migrations_dir,
        &config.schema_files,
        &base,
        plan_file,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
    .context("no plan written")?;
    if check {
        let current = match std::fs::read_to_string(plan_file) {
            Ok(text) => appschema_build::Plan::parse(&text, plan_file).ok(),
            Err(_) => None,
        };
        if current.as_ref() == Some(&plan) {
            println!("{} is up to date", plan_file.display());
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!(
            "error: `{}` is missing or out of date: run `appschema-cli prepare` and commit the file",
            plan_file.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(plan_file, plan.to_toml())
        .with_context(|| format!("failed to write `{}`", plan_file.display()))?;
    let shared = plan
        .migrations
        .iter()
        .filter(|m| m.scope == "shared")
        .count();
    println!(
        "wrote {}: {} migrations ({shared} shared, {} isolated)",
        plan_file.display(),
        plan.migrations.len(),
        plan.migrations.len() - shared
    );
    Ok(ExitCode::SUCCESS)
}

/// Names for one line: all of them when a few, else the first and the
/// last with the count.
fn summarize(names: &[String]) -> String {
    match names {
        [] => "(none)".to_string(),
        [_] | [_, _] | [_, _, _] => names.join(", "),
        [first, .., last] => format!("{first} … {last} ({} migrations)", names.len()),
    }
}

/// The tables the schema files mark isolated that exist in `schema` (the
/// shared schema).
/// The extensions installed inside any of the tenant schemas `tenants`.
fn extensions_in_tenants(
    config: &Config,
    tenants: &[String],
) -> Result<Vec<appschema_core::migrate::MisplacedExtension>> {
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = <diesel::PgConnection as diesel::Connection>::establish(config.database_url()?)
        .context("cannot connect to the database")?;
    appschema_core::migrate::extensions_in_schemas(&mut conn, tenants)
        .context("cannot read the extensions' schemas")
}

fn isolated_tables_in(config: &Config, schema: &str) -> Result<Vec<String>> {
    let base = std::env::current_dir().context("cannot read the working directory")?;
    let tables =
        appschema_planner::schema_source::TableScopes::from_files(&config.schema_files, &base)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let isolated: Vec<String> = tables
        .iter()
        .filter(|(_, t)| t.scope == Scope::Isolated)
        .map(|(name, _)| name.to_string())
        .collect();
    if isolated.is_empty() {
        return Ok(Vec::new());
    }
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut conn = PgConnection::establish(config.database_url()?)
        .context("cannot connect to the database")?;
    Ok(diesel::sql_query(
        "SELECT tablename::text AS name FROM pg_catalog.pg_tables
          WHERE schemaname = $1 AND tablename = ANY($2) ORDER BY 1",
    )
    .bind::<diesel::sql_types::Text, _>(schema)
    .bind::<diesel::sql_types::Array<diesel::sql_types::Text>, _>(&isolated)
    .load::<Name>(&mut conn)
    .context("cannot read the shared schema's tables")?
    .into_iter()
    .map(|n| n.name)
    .collect())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
