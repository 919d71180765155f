//! Operating tenants: `exec` (SQL in every tenant), `psql` (one tenant's
//! shell) and `list --sizes`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use appschema_core::across::{AcrossTenants, Event, Report};
use appschema_core::sizes::{tenant_sizes, SizeOrder, TenantSize};
use appschema_core::{redact_url, registry, PublicName, SearchPath};
use clap::{ArgGroup, Subcommand};
use diesel::{Connection, PgConnection};

use crate::dry_run::first_ten;
use crate::progress::Progress;

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Runs SQL in every tenant's schema (or the --tenant ones).
    ///
    /// Each tenant in its own transaction on its search_path, N workers; a tenant where
    /// it fails is rolled back and reported, the others go on; exits
    /// non-zero if any failed.
    #[command(
        group(ArgGroup::new("input").required(true).args(["sql", "file"])),
        after_help = "Examples:
  appschema-cli exec --sql 'UPDATE orders SET currency = '\\''EUR'\\'' WHERE currency IS NULL'
  appschema-cli exec --file backfill.sql --jobs 4
  appschema-cli exec --sql 'DELETE FROM sessions' --tenant acme.example.com --tenant globex.example.com
  appschema-cli exec --file fix.sql --dry-run
  appschema-cli exec --sql 'ANALYZE' --json"
    )]
    Exec {
        /// The SQL to run (one or more statements; no COMMIT or BEGIN).
        #[arg(long)]
        sql: Option<String>,
        /// A file holding the SQL to run.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Only this tenant (any of its public names); repeatable.
        #[arg(long = "tenant", value_name = "PUBLIC_NAME")]
        tenants: Vec<String>,
        /// Parallel workers, each with its own connection [default: number of CPUs].
        #[arg(long)]
        jobs: Option<usize>,
        /// Checks the SQL and prints the tenants it would run in, without running it.
        #[arg(long)]
        dry_run: bool,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Opens `psql` on a tenant's search_path.
    ///
    /// The path is `"<schema>", "public"`, or `--search-path`'s schemas after
    /// the tenant's; it says what it runs. Arguments after `--` go to psql.
    #[command(after_help = "Examples:
  appschema-cli psql acme.example.com
  appschema-cli psql acme.example.com -- -c 'SELECT count(*) FROM orders'")]
    Psql {
        /// Any of the tenant's public names.
        tenant: String,
        /// Arguments passed to psql as they are.
        #[arg(last = true, value_name = "PSQL_ARGS")]
        psql_args: Vec<String>,
    },
}

/// Runs one operations command.
pub fn run(command: OpsCommand, url: &str, path: &SearchPath) -> Result<ExitCode> {
    match command {
        OpsCommand::Exec {
            sql,
            file,
            tenants,
            jobs,
            dry_run,
            json,
        } => {
            let sql = match (sql, file) {
                (Some(sql), _) => sql,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("failed to read `{}`", path.display()))?,
                (None, None) => bail!("nothing to run: pass --sql SQL or --file FILE"),
            };
            exec(url, path, &sql, &tenants, jobs, dry_run, json)
        }
        OpsCommand::Psql { tenant, psql_args } => psql(url, path, &tenant, &psql_args),
    }
}

fn exec(
    url: &str,
    path: &SearchPath,
    sql: &str,
    tenants: &[String],
    jobs: Option<usize>,
    dry_run: bool,
    json: bool,
) -> Result<ExitCode> {
    if sql.trim().is_empty() {
        bail!("nothing to run: the SQL is empty");
    }
    // Refused before any tenant runs it, rather than failing 10,000 times.
    appschema_planner::sql::check_in_transaction(sql)
        .map_err(anyhow::Error::msg)
        .context("the SQL was refused before anything ran")?;
    let mut across = AcrossTenants::new(url).search_path(path.clone());
    if let Some(j) = jobs {
        if j == 0 {
            bail!("--jobs must be at least 1");
        }
        across = across.jobs(j);
    }
    if !tenants.is_empty() {
        let names = tenants
            .iter()
            .map(|t| PublicName::new(t).with_context(|| format!("invalid --tenant `{t}`")))
            .collect::<Result<Vec<_>>>()?;
        across = across.only_tenants(names);
    }
    if dry_run {
        let mut conn = PgConnection::establish(url).context("cannot connect to the database")?;
        let targets = across
            .tenants(&mut conn)
            .context("cannot read the tenants")?;
        if json {
            let rows: Vec<_> = targets
                .iter()
                .map(|t| serde_json::json!({"tenant": t.public_name, "schema": t.schema_name.as_str()}))
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"dry_run": true, "sql": sql, "tenants": rows})
                )?
            );
        } else {
            println!(
                "would run in {} tenant(s), each in its own transaction: {}",
                targets.len(),
                first_ten(targets.iter().map(|t| t.public_name.as_str())),
            );
        }
        return Ok(ExitCode::SUCCESS);
    }

    let progress = Progress::new(json);
    let on_event = |e: Event| match e {
        Event::Started { tenants } => progress.step(
            tenants,
            "exec [{bar:30}] {pos}/{len} tenants {elapsed}",
            String::new(),
            format!("running in {tenants} tenant(s)"),
        ),
        Event::TenantDone { .. } => progress.done(),
        Event::TenantFailed(f) => progress.failed(&f),
        _ => {}
    };
    let report = across
        .run_sql(sql, &on_event)
        .context("exec could not run")?;
    progress.finish();
    print_report(&report, json)?;
    Ok(if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(report: &Report, json: bool) -> Result<()> {
    if json {
        let failures: Vec<_> = report
            .failures
            .iter()
            .map(
                |f| serde_json::json!({"tenant": f.tenant, "schema": f.schema, "error": f.message}),
            )
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "tenants": report.tenants_done + report.failures.len(),
                "done": report.tenants_done,
                "failed": failures,
                "elapsed_secs": report.elapsed.as_secs_f64(),
            }))?
        );
        return Ok(());
    }
    println!(
        "{} tenant(s) done, {} failed, in {:.2}s",
        report.tenants_done,
        report.failures.len(),
        report.elapsed.as_secs_f64()
    );
    for f in &report.failures {
        eprintln!("error: {f}");
    }
    if !report.is_success() {
        eprintln!(
            "the failed tenants were rolled back: fix the cause and run again with --tenant for each"
        );
    }
    Ok(())
}

fn psql(url: &str, path: &SearchPath, tenant: &str, args: &[String]) -> Result<ExitCode> {
    let name =
        PublicName::new(tenant).with_context(|| format!("invalid public name `{tenant}`"))?;
    if has_options(url) {
        bail!(
            "the database URL sets `options`, which would replace the tenant's search_path: \
             remove them from the URL for `appschema-cli psql`"
        );
    }
    let mut conn = PgConnection::establish(url).context("cannot connect to the database")?;
    let found = registry::find(&mut conn, &name).context("cannot read the registry")?;
    let t = found.with_context(|| {
        format!("no tenant answers to `{name}`: check the name with `appschema-cli list`")
    })?;
    if !schema_exists(&mut conn, t.schema_name.as_str())? {
        bail!(
            "schema `{}` of tenant `{}` does not exist: a shell on its path would see the shared \
             schema's tables instead; drop the tenant or recreate its schema",
            t.schema_name,
            t.public_name
        );
    }
    drop(conn);
    let path = path.for_tenant(&t.schema_name);
    // libpq splits PGOPTIONS on spaces; a backslash escapes one.
    let ours = format!(
        "-c search_path={}",
        path.replace('\\', "\\\\").replace(' ', "\\ ")
    );
    let options = match std::env::var("PGOPTIONS") {
        Ok(existing) if !existing.trim().is_empty() => format!("{existing} {ours}"),
        _ => ours,
    };
    eprintln!(
        "tenant `{}`: running PGOPTIONS='{}' psql '{}'{}",
        t.public_name,
        options,
        redact_url(url),
        args.iter()
            .map(|a| format!(" '{}'", a.replace('\'', "'\\''")))
            .collect::<String>()
    );
    let status = std::process::Command::new("psql")
        .arg(url)
        .args(args)
        .env("PGOPTIONS", &options)
        .status()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                anyhow::anyhow!(
                    "`psql` is not on PATH: install PostgreSQL's client (postgresql-client)"
                )
            }
            _ => anyhow::Error::new(e).context("cannot run `psql`"),
        })?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    })
}

fn schema_exists(conn: &mut PgConnection, schema: &str) -> Result<bool> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        present: bool,
    }
    Ok(diesel::sql_query(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1) AS present",
    )
    .bind::<diesel::sql_types::Text, _>(schema)
    .get_result::<Exists>(conn)
    .context("cannot read the catalog")?
    .present)
}

/// Whether a URL or key=value conninfo sets libpq's `options`.
fn has_options(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.contains("options=")
}

/// `list --sizes`: each tenant's size and row estimate, in `order`.
pub fn list_sizes(conn: &mut PgConnection, order: SizeOrder, json: bool) -> Result<()> {
    let sizes = tenant_sizes(conn, order).context("cannot read the tenants' sizes")?;
    if json {
        let rows: Vec<_> = sizes.iter().map(size_json).collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    if sizes.is_empty() {
        eprintln!("no tenants yet: create one with `appschema-cli createschema PUBLIC_NAME`");
    }
    for t in &sizes {
        println!(
            "{}\t{}\t{}\t{} rows",
            t.public_name,
            t.schema_name,
            pretty_bytes(t.total_bytes),
            t.rows_estimate
        );
    }
    Ok(())
}

fn size_json(t: &TenantSize) -> serde_json::Value {
    serde_json::json!({
        "public_name": t.public_name,
        "schema": t.schema_name.as_str(),
        "total_bytes": t.total_bytes,
        "rows_estimate": t.rows_estimate,
        "relations": t.relations,
    })
}

/// Bytes as PostgreSQL's `pg_size_pretty` writes them (1024-based, rounded).
fn pretty_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 10.0 * 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", value.round() as i64, UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_print_like_pg_size_pretty() {
        assert_eq!(super::pretty_bytes(8192), "8192 bytes");
        assert_eq!(super::pretty_bytes(16384), "16 kB");
        assert_eq!(super::pretty_bytes(50 * 1024 * 1024), "50 MB");
    }
}
