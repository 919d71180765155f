//! Commands that exist only on a Citus cluster: move a tenant to another
//! node, spread tenants over the nodes by size.

use std::process::ExitCode;

use anyhow::{Context, Result};
use appschema_core::citus::{self, NodeAddr, TransferMode};
use appschema_core::PublicName;
use clap::Subcommand;
use diesel::{Connection, PgConnection};

#[derive(Debug, Subcommand)]
pub enum CitusCommand {
    /// On Citus: moves a tenant's tables to another node.
    ///
    /// With `citus_schema_move`, by logical replication when every table has a
    /// primary key or replica identity (writes go on during the copy), else
    /// blocking the tenant's writes for the copy. Prints where it went and
    /// how long it took.
    #[command(after_help = "Examples:
  appschema-cli move acme.example.com --to 10.0.0.7:5432
  appschema-cli move acme.example.com --to 10.0.0.7:5432 --mode block-writes")]
    Move {
        /// The tenant (any of its public names).
        tenant: String,
        /// The node: HOST:PORT as in `pg_dist_node` (see `appschema-cli list`).
        #[arg(long, value_name = "HOST:PORT")]
        to: String,
        /// auto (logical when the tables allow it), logical, or block-writes.
        #[arg(long, default_value = "auto", value_parser = ["auto", "logical", "block-writes"])]
        mode: String,
    },
    /// On Citus: spreads tenants over the nodes by size.
    ///
    /// The largest tenant on the fullest node moves to the emptiest while
    /// that narrows the gap.
    /// Prints each move; with --dry-run moves nothing.
    #[command(after_help = "Examples:
  appschema-cli rebalance --dry-run
  appschema-cli rebalance")]
    Rebalance {
        /// Prints the moves without making them.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(command: CitusCommand, url: &str) -> Result<ExitCode> {
    let mut conn = PgConnection::establish(url).context("cannot connect to the database")?;
    match command {
        CitusCommand::Move { tenant, to, mode } => {
            let tenant =
                PublicName::new(&tenant).with_context(|| format!("invalid tenant `{tenant}`"))?;
            let to: NodeAddr = to.parse()?;
            let mode: TransferMode = mode.parse().map_err(anyhow::Error::msg)?;
            eprintln!("moving `{tenant}` to {to} ({mode})…");
            let moved = citus::move_tenant(&mut conn, &tenant, &to, mode)?;
            if moved.from == moved.to {
                println!(
                    "`{tenant}` (schema {}) is on {} already",
                    moved.schema, moved.to
                );
            } else {
                println!(
                    "moved `{tenant}` (schema {}) from {} to {} in {:.2?} ({})",
                    moved.schema, moved.from, moved.to, moved.elapsed, moved.mode
                );
            }
        }
        CitusCommand::Rebalance { dry_run } => {
            let plan = citus::rebalance_plan(&mut conn)?;
            if plan.is_empty() {
                println!("balanced: nothing to move");
                return Ok(ExitCode::SUCCESS);
            }
            for (i, m) in plan.iter().enumerate() {
                let line = format!(
                    "{}/{}: `{}` (schema {}, {} bytes) {} -> {}",
                    i + 1,
                    plan.len(),
                    m.tenant,
                    m.schema,
                    m.bytes,
                    m.from,
                    m.to
                );
                if dry_run {
                    println!("{line} (dry run)");
                    continue;
                }
                let moved = citus::move_tenant(
                    &mut conn,
                    &PublicName::new(&m.tenant)?,
                    &m.to,
                    TransferMode::Auto,
                )?;
                println!("{line}: done in {:.2?} ({})", moved.elapsed, moved.mode);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
