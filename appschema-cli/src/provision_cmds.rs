//! Tenant provisioning commands: createschema, schematemplate, spares, list,
//! dropschema, restore, rename, clone.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use appschema_core::provision::{self, DropMode, NewTenant, Source, Template};
use appschema_core::MigrationSet;
use appschema_core::{registry, PublicName, SchemaName};
use clap::Subcommand;
use diesel::{Connection, PgConnection};

#[derive(Debug, Subcommand)]
pub enum ProvisionCommand {
    /// Creates a tenant.
    ///
    /// Registry row, schema and isolated migrations, in one transaction.
    /// Prints the schema it created.
    #[command(after_help = "Examples:
  appschema-cli createschema acme.example.com
  appschema-cli createschema acme.example.com --schema acme --from spare
  appschema-cli createschema acme.example.com --template acme-template.sql")]
    Createschema {
        /// The tenant's public name (usually its host name).
        public_name: String,
        /// The schema [default: derived from the public name].
        #[arg(long)]
        schema: Option<String>,
        /// How to build the schema; `spare` falls back to the stored template, then the migrations.
        #[arg(long = "from", default_value = "migrations", value_parser = ["migrations", "template", "spare"])]
        from: String,
        /// Replay this template file instead of the stored one (implies --from template).
        #[arg(long, value_name = "FILE")]
        template: Option<PathBuf>,
    },
    /// Generates the schema template for the current isolated head.
    ///
    /// Stores it in the database (for `createschema --from template`) and
    /// writes it out.
    #[command(after_help = "Examples:
  appschema-cli schematemplate
  appschema-cli schematemplate --output template.sql")]
    Schematemplate {
        /// Where to write it [default: stdout].
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Lists the spare schemas, or tops them up to --count.
    #[command(after_help = "Examples:
  appschema-cli spares
  appschema-cli spares --count 5")]
    Spares {
        /// Keep this many spares ready.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Lists the tenants.
    ///
    /// With --sizes, each one's total relation size and estimated rows.
    #[command(after_help = "Examples:
  appschema-cli list
  appschema-cli list --json
  appschema-cli list --sizes --sort size     # the biggest tenants first
  appschema-cli list --sizes --sort rows --json")]
    List {
        /// Prints JSON.
        #[arg(long)]
        json: bool,
        /// Adds each tenant's total relation size (tables, indexes, TOAST)
        /// and row estimate (PostgreSQL's statistics).
        #[arg(long)]
        sizes: bool,
        /// Order of --sizes: name, size (largest first) or rows (most first).
        #[arg(long, requires = "sizes", default_value = "name", value_parser = ["name", "size", "rows"])]
        sort: String,
    },
    /// Drops a tenant (schema and registry rows, in one transaction).
    #[command(after_help = "Examples:
  appschema-cli dropschema acme.example.com
  appschema-cli dropschema acme.example.com --archive --yes")]
    Dropschema {
        /// Any of the tenant's public names.
        public_name: String,
        /// Rename the schema aside (`appschema_archived_…`) instead of dropping it.
        #[arg(long)]
        archive: bool,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Restores an archived tenant.
    #[command(after_help = "Examples:
  appschema-cli restore appschema_archived_acme_example_com_1a2b3c4d5e6f7a8b
  appschema-cli restore appschema_archived_acme_example_com_1a2b3c4d5e6f7a8b --as acme2.example.com --schema acme2")]
    Restore {
        /// The archive's schema (`appschema_archived_…`, as dropschema --archive printed).
        archive: String,
        /// Restore under this public name [default: the old names].
        #[arg(long = "as", value_name = "PUBLIC_NAME")]
        public_name: Option<String>,
        /// Restore into this schema [default: the old schema].
        #[arg(long)]
        schema: Option<String>,
    },
    /// Renames a tenant's public name and/or schema.
    #[command(after_help = "Examples:
  appschema-cli rename acme.example.com --to acme.io
  appschema-cli rename acme.example.com --schema acme_io")]
    Rename {
        /// Any of the tenant's public names.
        public_name: String,
        /// The new primary public name.
        #[arg(long = "to", value_name = "NEW_PUBLIC_NAME")]
        to: Option<String>,
        /// The new schema.
        #[arg(long)]
        schema: Option<String>,
    },
    /// Creates a tenant as a copy of another, data included.
    #[command(after_help = "Examples:
  appschema-cli clone acme.example.com acme-staging.example.com
  appschema-cli clone acme.example.com demo.example.com --schema demo")]
    Clone {
        /// The tenant to copy.
        source: String,
        /// The new tenant's public name.
        new_public_name: String,
        /// The new schema [default: derived from the public name].
        #[arg(long)]
        schema: Option<String>,
    },
}

fn connect(url: &str) -> Result<PgConnection> {
    let mut conn = PgConnection::establish(url).context("cannot connect to the database")?;
    registry::install(&mut conn).context("cannot install appschema's own tables")?;
    Ok(conn)
}

fn public(name: &str) -> Result<PublicName> {
    PublicName::new(name).with_context(|| format!("invalid public name `{name}`"))
}

fn request(public_name: &str, schema: Option<&str>) -> Result<NewTenant> {
    let mut r = NewTenant::new(public_name)
        .with_context(|| format!("invalid public name `{public_name}`"))?;
    if let Some(s) = schema {
        r = r
            .schema(s)
            .with_context(|| format!("invalid schema name `{s}`"))?;
    }
    Ok(r)
}

/// Runs one provisioning command. `migrations` loads the migration set
/// (only the commands that build schemas need it).
pub fn run(
    command: ProvisionCommand,
    url: &str,
    migrations: impl FnOnce() -> Result<MigrationSet>,
) -> Result<ExitCode> {
    let mut conn = connect(url)?;
    match command {
        ProvisionCommand::Createschema {
            public_name,
            schema,
            from,
            template,
        } => {
            let set = migrations()?;
            let source: Source = from.parse().map_err(anyhow::Error::msg)?;
            let req = request(&public_name, schema.as_deref())?.source(source);
            let created = match template {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("failed to read `{}`", path.display()))?;
                    let template = Template::parse(&text).with_context(|| {
                        format!("`{}` is not a schema template", path.display())
                    })?;
                    provision::create_tenant_from_template(&mut conn, &set, &req, &template)
                }
                None => provision::create_tenant(&mut conn, &set, &req),
            }
            .with_context(|| format!("cannot create tenant `{public_name}`"))?;
            println!("{}", created.tenant.schema_name);
            eprintln!(
                "created tenant `{}` (from {})",
                created.tenant.public_name, created.source
            );
        }
        ProvisionCommand::Schematemplate { output } => {
            let set = migrations()?;
            let template = provision::generate_template(&mut conn, url, &set)
                .context("cannot generate the schema template")?;
            provision::store_template(&mut conn, &template)
                .context("cannot store the schema template")?;
            match output {
                Some(path) => std::fs::write(&path, template.to_string())
                    .with_context(|| format!("failed to write `{}`", path.display()))?,
                None => print!("{template}"),
            }
        }
        ProvisionCommand::Spares { count } => {
            if let Some(count) = count {
                let set = migrations()?;
                let made = provision::ensure_spares(&mut conn, &set, count)
                    .context("cannot create spares")?;
                eprintln!("created {made} spare schema(s)");
            }
            let spares = provision::spare_schemas(&mut conn).context("cannot list the spares")?;
            if spares.is_empty() {
                eprintln!("no spare schemas: create some with `appschema-cli spares --count N`");
            }
            for spare in spares {
                println!("{spare}");
            }
        }
        ProvisionCommand::List { json, sizes, sort } if sizes => {
            let order = sort.parse().map_err(anyhow::Error::msg)?;
            crate::ops_cmds::list_sizes(&mut conn, order, json)?;
        }
        ProvisionCommand::List { json, .. } => {
            let tenants = registry::list(&mut conn).context("cannot list the tenants")?;
            // On Citus, the node each tenant lives on.
            let nodes = appschema_core::citus::placements_by_schema(&mut conn)
                .context("cannot read where the tenants live")?;
            let node =
                |t: &registry::Tenant| nodes.get(t.schema_name.as_str()).map(|n| n.to_string());
            if json {
                let rows: Vec<_> = tenants
                    .iter()
                    .map(|t| serde_json::json!({"public_name": t.public_name, "schema": t.schema_name.as_str(), "node": node(t)}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                if tenants.is_empty() {
                    eprintln!(
                        "no tenants yet: create one with `appschema-cli createschema PUBLIC_NAME`"
                    );
                }
                for t in &tenants {
                    match node(t) {
                        Some(node) => println!("{}\t{}\t{node}", t.public_name, t.schema_name),
                        None => println!("{}\t{}", t.public_name, t.schema_name),
                    }
                }
            }
        }
        ProvisionCommand::Dropschema {
            public_name,
            archive,
            yes,
        } => {
            let name = public(&public_name)?;
            let tenant = registry::find(&mut conn, &name)?.with_context(|| {
                format!("no tenant is named `{name}`: check the name with `appschema-cli list`")
            })?;
            if !yes {
                let what = if archive {
                    "archive"
                } else {
                    "drop, with all its data,"
                };
                confirm(&format!(
                    "{what} tenant `{}` (schema `{}`)?",
                    tenant.public_name, tenant.schema_name
                ))?;
            }
            let mode = if archive {
                DropMode::Archive
            } else {
                DropMode::Drop
            };
            match provision::drop_tenant(&mut conn, &name, mode)
                .with_context(|| format!("cannot drop tenant `{name}`"))?
            {
                Some(archive) => println!("{}", archive.schema_name),
                None => eprintln!(
                    "dropped tenant `{}` and schema `{}`",
                    tenant.public_name, tenant.schema_name
                ),
            }
        }
        ProvisionCommand::Restore {
            archive,
            public_name,
            schema,
        } => {
            let archive = SchemaName::internal(&archive)
                .with_context(|| format!("invalid archive `{archive}`"))?;
            let public_name = public_name.as_deref().map(public).transpose()?;
            let schema = schema
                .as_deref()
                .map(|s| SchemaName::new(s).with_context(|| format!("invalid schema name `{s}`")))
                .transpose()?;
            let tenant = provision::restore_archive(
                &mut conn,
                &archive,
                public_name.as_ref(),
                schema.as_ref(),
            )
            .with_context(|| format!("cannot restore `{archive}`"))?;
            println!("{}", tenant.schema_name);
        }
        ProvisionCommand::Rename {
            public_name,
            to,
            schema,
        } => {
            if to.is_none() && schema.is_none() {
                bail!("nothing to rename: pass --to NEW_PUBLIC_NAME and/or --schema NEW_SCHEMA");
            }
            let name = public(&public_name)?;
            let to = to.as_deref().map(public).transpose()?;
            let schema = schema
                .as_deref()
                .map(|s| SchemaName::new(s).with_context(|| format!("invalid schema name `{s}`")))
                .transpose()?;
            let tenant = provision::rename_tenant(&mut conn, &name, to.as_ref(), schema.as_ref())
                .with_context(|| format!("cannot rename tenant `{name}`"))?;
            println!("{}\t{}", tenant.public_name, tenant.schema_name);
        }
        ProvisionCommand::Clone {
            source,
            new_public_name,
            schema,
        } => {
            let set = migrations()?;
            let source = public(&source)?;
            let req = request(&new_public_name, schema.as_deref())?;
            let created = provision::clone_tenant(&mut conn, &set, &source, &req)
                .with_context(|| format!("cannot clone tenant `{source}`"))?;
            println!("{}", created.tenant.schema_name);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("refusing to drop without confirmation: stdin is not a terminal, pass --yes");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not confirmed: nothing was dropped");
    }
    Ok(())
}
