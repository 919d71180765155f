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
                format!(
                    "{} ({}) -> {} schema(s): {}",
                    step.migration,
                    step.scope,
                    step.schemas.len(),
                    first_ten(step.schemas.iter().map(String::as_str)),
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

/// The first ten of `names`, then how many more: `a, b, …, j, … and 5 more`.
pub(crate) fn first_ten<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    let len = names.len();
    let shown: Vec<&str> = names.take(10).collect();
    match len - shown.len() {
        0 => shown.join(", "),
        more => format!("{}, … and {more} more", shown.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::first_ten;

    #[test]
    fn first_ten_lists_up_to_ten_names_then_counts_the_rest() {
        let names: Vec<String> = (1..=12).map(|i| format!("t{i}")).collect();
        let of = |n: usize| first_ten(names[..n].iter().map(String::as_str));
        assert_eq!(of(0), "");
        assert_eq!(of(3), "t1, t2, t3");
        assert_eq!(of(10), "t1, t2, t3, t4, t5, t6, t7, t8, t9, t10");
        assert_eq!(
            of(12),
            "t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, … and 2 more"
        );
    }
}
