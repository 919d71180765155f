//! `appschema-cli migrate --dry-run`: the plan, in timeline order, with the
//! isolated migrations shown even while there is no tenant to run them in.

use anyhow::{Context, Result};
use appschema_core::migrate::{Migrator, PlannedMigration};
use appschema_core::MigrationSet;
use diesel::{Connection, PgConnection};

/// How many schemas isolated migrations go to today: tenants and spares
/// (the ones `--tenant` picks, when given).
pub(crate) fn tenant_schemas(database_url: &str, migrator: &Migrator) -> Result<usize> {
    let mut conn =
        PgConnection::establish(database_url).context("cannot connect to the database")?;
    Ok(migrator
        .targets(&mut conn)
        .context("cannot read the tenants")?
        .len())
}

/// Prints `plan` in timeline order. With no tenant schema yet
/// (`tenant_schemas == 0`), every isolated migration of `set` is listed
/// too, as running in each tenant created later: the plan can be checked
/// before the first tenant exists.
pub(crate) fn print(set: &MigrationSet, plan: &[PlannedMigration], tenant_schemas: usize) {
    let lines = lines(set, plan, tenant_schemas);
    if lines.is_empty() {
        println!("nothing to apply");
    }
    for (i, line) in lines.iter().enumerate() {
        println!("{}. {line}", i + 1);
    }
    if tenant_schemas == 0 && set.migrations().iter().any(|m| m.scope().in_tenants()) {
        println!(
            "no tenant yet: isolated migrations run in each tenant when it is created \
             (`appschema-cli createschema`), in this order"
        );
    }
}

fn lines(set: &MigrationSet, plan: &[PlannedMigration], tenant_schemas: usize) -> Vec<String> {
    let mut out = Vec::new();
    for m in set.migrations() {
        let step = plan.iter().find(|step| step.migration == m.name());
        let mut line = match step {
            Some(step) => {
                let shown: Vec<&str> = step.schemas.iter().take(10).map(String::as_str).collect();
                let more = step.schemas.len().saturating_sub(shown.len());
                format!(
                    "{} ({}) -> {} schema(s): {}{}",
                    step.migration,
                    step.scope,
                    step.schemas.len(),
                    shown.join(", "),
                    if more > 0 {
                        format!(", … and {more} more")
                    } else {
                        String::new()
                    }
                )
            }
            None if tenant_schemas == 0 && m.scope().in_tenants() => {
                format!("{} ({}) -> 0 schema(s)", m.name(), m.scope())
            }
            None => continue,
        };
        if tenant_schemas == 0 && m.scope().in_tenants() {
            line.push_str(" + each tenant created later");
        }
        out.push(line);
    }
    out
}
