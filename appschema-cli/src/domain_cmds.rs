//! `domain add|remove|list|primary`: the public names (domains) a tenant
//! answers to, one of them primary.

use std::process::ExitCode;

use anyhow::{Context, Result};
use appschema_core::provision::{add_domain, list_domains, remove_domain, set_primary_domain};
use appschema_core::PublicName;
use clap::Subcommand;
use diesel::{Connection, PgConnection};

#[derive(Debug, Subcommand)]
pub enum DomainCommands {
    /// Manages a tenant's domains (the host names it answers to).
    ///
    /// Each domain belongs to one tenant at most; exactly one of a tenant's
    /// domains is primary (its public name).
    #[command(after_help = "Examples:
  appschema-cli domain add acme.example.com shop.acme.com
  appschema-cli domain primary shop.acme.com
  appschema-cli domain list acme.example.com
  appschema-cli domain remove shop.acme.com acme.example.com")]
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DomainCommand {
    /// Adds a domain to a tenant, as an alias.
    #[command(after_help = "Examples:
  appschema-cli domain add acme.example.com shop.acme.com")]
    Add {
        /// The tenant (any of its domains).
        tenant: String,
        /// The new domain.
        domain: String,
    },
    /// Removes one of a tenant's domains (never its primary: make another
    /// primary first).
    #[command(after_help = "Examples:
  appschema-cli domain remove acme.example.com old-acme.example.com")]
    Remove {
        /// The tenant (any of its domains).
        tenant: String,
        /// The domain to remove.
        domain: String,
    },
    /// Prints a tenant's domains, one a line, the primary first and marked
    /// `(primary)`.
    #[command(after_help = "Examples:
  appschema-cli domain list acme.example.com")]
    List {
        /// The tenant (any of its domains).
        tenant: String,
    },
    /// Makes one of a tenant's domains its primary domain; the old primary
    /// stays as an alias.
    #[command(after_help = "Examples:
  appschema-cli domain primary shop.acme.com")]
    Primary {
        /// The domain to make primary (it names its tenant).
        domain: String,
    },
}

fn name(what: &str, value: &str) -> Result<PublicName> {
    PublicName::new(value).with_context(|| format!("invalid {what} `{value}`"))
}

pub fn run(command: DomainCommands, url: &str) -> Result<ExitCode> {
    let DomainCommands::Domain { command } = command;
    let mut conn = PgConnection::establish(url).context("cannot connect to the database")?;
    match command {
        DomainCommand::Add { tenant, domain } => {
            let (tenant, domain) = (name("tenant", &tenant)?, name("domain", &domain)?);
            add_domain(&mut conn, &tenant, &domain)
                .with_context(|| format!("cannot add domain `{domain}` to `{tenant}`"))?;
            println!("added {domain}");
        }
        DomainCommand::Remove { tenant, domain } => {
            let (tenant, domain) = (name("tenant", &tenant)?, name("domain", &domain)?);
            remove_domain(&mut conn, &tenant, &domain)
                .with_context(|| format!("cannot remove domain `{domain}` from `{tenant}`"))?;
            println!("removed {domain}");
        }
        DomainCommand::List { tenant } => {
            let tenant = name("tenant", &tenant)?;
            let domains = list_domains(&mut conn, &tenant)
                .with_context(|| format!("cannot list the domains of `{tenant}`"))?;
            for domain in domains {
                if domain.primary {
                    println!("{} (primary)", domain.name);
                } else {
                    println!("{}", domain.name);
                }
            }
        }
        DomainCommand::Primary { domain } => {
            let domain = name("domain", &domain)?;
            let tenant = set_primary_domain(&mut conn, &domain)
                .with_context(|| format!("cannot make `{domain}` primary"))?;
            println!(
                "{} is the primary domain of schema {}",
                tenant.public_name, tenant.schema_name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
