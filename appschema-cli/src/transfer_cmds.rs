//! Moving one tenant between databases: export, import.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use appschema_core::provision::{self, ImportOptions, TableTransfer};
use appschema_core::{registry, MigrationSet, PublicName, SchemaName};
use clap::Subcommand;
use diesel::{Connection, PgConnection};

#[derive(Debug, Subcommand)]
pub enum TransferCommand {
    /// Writes one tenant to a file.
    ///
    /// Its registry row, aliases and applied
    /// migrations, its schema's DDL (independent of the schema's name) and
    /// every row, from one snapshot, streamed. Needs pg_dump.
    #[command(after_help = "Examples:
  appschema-cli export acme.example.com -o acme.tenant
  appschema-cli export acme.example.com -o - | gzip > acme.tenant.gz
  appschema-cli export acme.example.com -o acme.tenant --json")]
    Export {
        /// Any of the tenant's public names.
        public_name: String,
        /// The file to write (`-`: stdout). Written aside and renamed into
        /// place when complete.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Prints what was exported as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Creates a tenant from a file `export` wrote.
    ///
    /// In one transaction; refused (changing nothing) when the file is damaged, a name is taken,
    /// or this database's isolated migration head is not the export's.
    #[command(after_help = "Examples:
  appschema-cli import acme.tenant
  appschema-cli import acme.tenant --as acme.eu.example.com --schema acme_eu
  gunzip -c acme.tenant.gz | appschema-cli import - --json")]
    Import {
        /// The export (`-`: stdin).
        file: PathBuf,
        /// Import under this public name [default: the exported one, with its aliases].
        #[arg(long = "as", value_name = "PUBLIC_NAME")]
        public_name: Option<String>,
        /// The schema [default: derived from the public name].
        #[arg(long)]
        schema: Option<String>,
        /// Prints what was imported as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one transfer command. `migrations` loads the migration set (import
/// checks the export's head against it).
pub fn run(
    command: TransferCommand,
    url: &str,
    migrations: impl FnOnce() -> Result<MigrationSet>,
) -> Result<ExitCode> {
    let mut conn = PgConnection::establish(url).context("cannot connect to the database")?;
    registry::install(&mut conn).context("cannot install appschema's own tables")?;
    match command {
        TransferCommand::Export {
            public_name,
            output,
            json,
        } => export(&mut conn, url, &public_name, &output, json),
        TransferCommand::Import {
            file,
            public_name,
            schema,
            json,
        } => {
            let set = migrations()?;
            let mut options = ImportOptions::new();
            if let Some(name) = &public_name {
                options = options.public_name(
                    PublicName::new(name)
                        .with_context(|| format!("invalid public name `{name}`"))?,
                );
            }
            if let Some(s) = &schema {
                options = options.schema(
                    SchemaName::new(s).with_context(|| format!("invalid schema name `{s}`"))?,
                );
            }
            import(&mut conn, &set, &file, &options, json)
        }
    }
}

fn export(
    conn: &mut PgConnection,
    url: &str,
    public_name: &str,
    output: &Path,
    json: bool,
) -> Result<ExitCode> {
    let name = PublicName::new(public_name)
        .with_context(|| format!("invalid public name `{public_name}`"))?;
    let to_stdout = output == Path::new("-");
    // A file is written aside and renamed into place once complete, so a
    // failed export never leaves a file at OUTPUT.
    let partial = partial_path(output);
    let exported = if to_stdout {
        let stdout = std::io::stdout().lock();
        provision::export_tenant(conn, url, &name, BufWriter::new(stdout), report_table)
    } else {
        let file = File::create(&partial)
            .with_context(|| format!("failed to create `{}`", partial.display()))?;
        let result = provision::export_tenant(conn, url, &name, BufWriter::new(file), report_table);
        match &result {
            Ok(_) => std::fs::rename(&partial, output).with_context(|| {
                format!(
                    "failed to rename `{}` to `{}`",
                    partial.display(),
                    output.display()
                )
            })?,
            Err(_) => {
                let _ = std::fs::remove_file(&partial);
            }
        }
        result
    }
    .with_context(|| format!("cannot export tenant `{public_name}`"))?;
    let rows: u64 = exported.tables.iter().map(|t| t.rows).sum();
    if json {
        let value = serde_json::json!({
            "public_name": exported.public_name,
            "schema": exported.schema_name.as_str(),
            "head": exported.head,
            "bytes": exported.bytes,
            "rows": rows,
            "tables": tables_json(&exported.tables),
        });
        // With `-o -` stdout holds the export: the summary goes to stderr.
        if to_stdout {
            eprintln!("{value}");
        } else {
            println!("{value}");
        }
    }
    eprintln!(
        "exported tenant `{}` (schema `{}`, migration {}): {} table(s), {rows} row(s), {} to {}",
        exported.public_name,
        exported.schema_name,
        exported.head.as_deref().unwrap_or("none"),
        exported.tables.len(),
        human_bytes(exported.bytes),
        if to_stdout {
            "stdout".to_string()
        } else {
            output.display().to_string()
        },
    );
    Ok(ExitCode::SUCCESS)
}

fn import(
    conn: &mut PgConnection,
    migrations: &MigrationSet,
    file: &Path,
    options: &ImportOptions,
    json: bool,
) -> Result<ExitCode> {
    let imported = if file == Path::new("-") {
        let stdin = std::io::stdin().lock();
        provision::import_tenant(
            conn,
            migrations,
            BufReader::new(stdin),
            options,
            report_table,
        )
    } else {
        let input =
            File::open(file).with_context(|| format!("failed to open `{}`", file.display()))?;
        provision::import_tenant(
            conn,
            migrations,
            BufReader::new(input),
            options,
            report_table,
        )
    }
    .with_context(|| format!("cannot import `{}`", file.display()))?;
    let rows: u64 = imported.tables.iter().map(|t| t.rows).sum();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "public_name": imported.tenant.public_name,
                "schema": imported.tenant.schema_name.as_str(),
                "bytes": imported.bytes,
                "rows": rows,
                "tables": tables_json(&imported.tables),
            })
        );
    } else {
        println!("{}", imported.tenant.schema_name);
    }
    eprintln!(
        "imported tenant `{}` into schema `{}`: {} table(s), {rows} row(s)",
        imported.tenant.public_name,
        imported.tenant.schema_name,
        imported.tables.len(),
    );
    Ok(ExitCode::SUCCESS)
}

/// One progress line per table, on stderr (stdout may carry the export).
fn report_table(t: &TableTransfer) {
    eprintln!("  {}: {} row(s), {}", t.table, t.rows, human_bytes(t.bytes));
    std::io::stderr().flush().ok();
}

fn tables_json(tables: &[TableTransfer]) -> serde_json::Value {
    tables
        .iter()
        .map(|t| serde_json::json!({"table": t.table, "rows": t.rows, "bytes": t.bytes}))
        .collect()
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
