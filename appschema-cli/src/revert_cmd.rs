//! `migrate --revert [N] | --revert --to VERSION`, and the line of `status`
//! saying what `migrate --revert` would undo.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use appschema_core::migrate::{Event, Migrator, RevertTo};
use appschema_core::MigrationSet;

use crate::dry_run::first_ten;
use crate::progress::{Direction, Progress};

/// The revert `--revert [N]` and `--to VERSION` ask for. VERSION may be a
/// directory name (`2024-01-01-000000_create_plans`) or a version as diesel
/// records it: the part before the first `_`, dashes removed.
pub(crate) fn target(n: Option<usize>, to: Option<&str>) -> Result<RevertTo> {
    match (n, to) {
        (Some(_), Some(_)) => {
            bail!("give either `--revert N` (the last N migrations) or `--revert --to VERSION`, not both")
        }
        (_, Some(version)) => {
            let version: String = version
                .split('_')
                .next()
                .unwrap_or_default()
                .chars()
                .filter(|c| *c != '-')
                .collect();
            if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric()) {
                bail!("--to wants a migration version (`2024-01-01-000000` or its directory name), got `{version}`");
            }
            Ok(RevertTo::Version(version))
        }
        (Some(0), None) => bail!("--revert N must be at least 1"),
        (n, None) => Ok(RevertTo::Last(n.unwrap_or(1))),
    }
}

/// Runs (or, with `dry_run`, prints) the revert.
pub(crate) fn revert(
    set: &MigrationSet,
    migrator: Migrator,
    to: &RevertTo,
    dry_run: bool,
) -> Result<ExitCode> {
    if dry_run {
        let plan = migrator
            .revert_plan(set, to)
            .context("nothing was reverted")?;
        if plan.is_empty() {
            println!("nothing to revert");
        }
        for (i, step) in plan.iter().enumerate() {
            println!(
                "{}. revert {} ({}) -> {} schema(s): {}",
                i + 1,
                step.migration,
                step.scope,
                step.schemas.len(),
                first_ten(step.schemas.iter().map(String::as_str)),
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let progress = Progress::new(false);
    let on_event = |e: Event| progress.migrate_event(Direction::Revert, e);
    let report = migrator
        .revert(set, to, &on_event)
        .context("nothing was reverted")?;
    progress.finish();
    println!(
        "{} schema(s) reverted, {} migration(s) reverted, {} failure(s) in {:.2}s",
        report.schemas_migrated,
        report.migrations_reverted,
        report.failures.len(),
        report.elapsed.as_secs_f64()
    );
    if report.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    for f in &report.failures {
        eprintln!("error: {f}");
    }
    let resume = match to {
        RevertTo::Version(v) => format!("`appschema-cli migrate --revert --to {v}`"),
        RevertTo::Last(_) => {
            "`appschema-cli migrate --revert --to VERSION` (the version the revert \
             was to end at: `--revert N` counts from where the database is now)"
                .to_string()
        }
    };
    eprintln!(
        "the failed schema(s) kept the migration that failed, the others are reverted{}: fix the \
         failures above and resume with {resume}",
        if report.steps_skipped > 0 {
            format!(" ({} later step(s) not started)", report.steps_skipped)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::FAILURE)
}

/// `status`'s last line: what `migrate --revert` would undo, or why it
/// would refuse.
pub(crate) fn print_status(set: &MigrationSet, migrator: Migrator) {
    match migrator.revert_plan(set, &RevertTo::Last(1)) {
        Ok(plan) if plan.is_empty() => println!("revert: nothing to revert"),
        Ok(plan) => {
            for step in plan {
                println!(
                    "revert: `migrate --revert` would undo {} ({}) in {} schema(s)",
                    step.migration,
                    step.scope,
                    step.schemas.len()
                );
            }
        }
        Err(e) => println!("revert: `migrate --revert` would refuse: {e}"),
    }
}
