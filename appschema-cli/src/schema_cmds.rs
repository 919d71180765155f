//! `appschema-cli schema fix`: makes a file written by `diesel print-schema`
//! usable by appschema as it is, so re-running print-schema after a
//! migration is all it takes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;

/// `appschema-cli schema …`.
#[derive(Debug, Subcommand)]
pub(crate) enum SchemaCommand {
    /// Post-processes files written by `diesel print-schema`.
    #[command(after_help = "Examples:
  diesel print-schema --schema dev_localhost > src/schema/tenant.rs
  appschema-cli schema fix src/schema/tenant.rs")]
    Schema {
        #[command(subcommand)]
        command: SchemaSubcommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaSubcommand {
    /// Rewrites, in place, what diesel's print-schema output needs for
    /// appschema: custom SQL types printed from a tenant's schema lose
    /// `schema = "<tenant>"` (such a type exists once per tenant and is
    /// resolved through the connection's path), and every custom SQL type
    /// derives `diesel::query_builder::QueryId` (diesel-async needs it).
    /// Running it again changes nothing.
    #[command(after_help = "Examples:
  appschema-cli schema fix src/schema/tenant.rs
  appschema-cli schema fix src/schema/tenant.rs --tenant-schema dev_localhost
  appschema-cli schema fix src/schema/tenant.rs --check   # in CI")]
    Fix {
        /// The files; each is rewritten only when something changes.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The tenant schema the file was printed from
        /// (`print-schema --schema <SCHEMA>`): its custom types lose
        /// `schema = "<SCHEMA>"`. Leave it out for a file of shared tables,
        /// whose types must keep their schema.
        #[arg(long, value_name = "SCHEMA")]
        tenant_schema: Option<String>,
        /// Writes nothing; exits 1 when a file needs fixing.
        #[arg(long)]
        check: bool,
    },
}

pub(crate) fn run(command: SchemaCommand) -> Result<ExitCode> {
    let SchemaCommand::Schema {
        command:
            SchemaSubcommand::Fix {
                files,
                tenant_schema,
                check,
            },
    } = command;
    let mut stale = 0;
    for file in &files {
        if !fix_file(file, tenant_schema.as_deref(), check)? {
            stale += 1;
        }
    }
    if check && stale > 0 {
        eprintln!(
            "error: {stale} file(s) need `appschema-cli schema fix` (run it after each `diesel print-schema`)"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Fixes `path`; `false` when it needed fixing and `check` kept it as it was.
fn fix_file(path: &Path, tenant_schema: Option<&str>, check: bool) -> Result<bool> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read `{}`", path.display()))?;
    let fixed = fix(&text, tenant_schema);
    if tenant_schema.is_none() {
        if let Some(wrapper) = wrapper_module(&text) {
            if unqualify_postgres_type(&text, &wrapper).is_some() {
                eprintln!(
                    "note: {}: custom types keep `schema = \"{wrapper}\"`; if the file was printed \
                     from a tenant's schema, pass `--tenant-schema {wrapper}`",
                    path.display()
                );
            }
        }
    }
    if fixed.text == text {
        println!("{}: nothing to fix", path.display());
        return Ok(true);
    }
    let what = format!(
        "{} type(s) unqualified{}, {} `QueryId` derive(s) added",
        fixed.unqualified,
        fixed
            .tenant_schema
            .as_deref()
            .map(|s| format!(" (schema `{s}`)"))
            .unwrap_or_default(),
        fixed.query_ids
    );
    if check {
        eprintln!("{}: needs fixing: {what}", path.display());
        return Ok(false);
    }
    std::fs::write(path, &fixed.text)
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    println!("{}: {what}", path.display());
    Ok(true)
}

/// The result of [`fix`].
#[derive(Debug)]
pub(crate) struct Fixed {
    pub(crate) text: String,
    /// The tenant schema whose qualifier was dropped from custom types.
    pub(crate) tenant_schema: Option<String>,
    pub(crate) unqualified: usize,
    pub(crate) query_ids: usize,
}

/// Fixes print-schema output `text` (see [`SchemaSubcommand::Fix`]).
/// Works line by line on the shape print-schema writes (rustfmt'd), so
/// comments and formatting are kept.
pub(crate) fn fix(text: &str, tenant_schema: Option<&str>) -> Fixed {
    let tenant_schema = tenant_schema.map(str::to_string);
    let mut out = String::with_capacity(text.len() + 64);
    let (mut unqualified, mut query_ids) = (0, 0);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim_start().starts_with("#[derive(") {
            // A derive list rustfmt may have broken over several lines.
            let mut end = i;
            while end + 1 < lines.len() && !lines[end].contains(")]") {
                end += 1;
            }
            let attr: String = lines[i..=end].concat();
            let derives_sql_type = attr
                .split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
                .any(|d| d == "SqlType" || d.ends_with("::SqlType"));
            let has_query_id = attr
                .split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
                .any(|d| d == "QueryId" || d.ends_with("::QueryId"));
            if derives_sql_type && !has_query_id {
                if end > i && line.trim_end().ends_with("#[derive(") {
                    // One derive a line: add one more line, indented alike.
                    let indent: String = lines[i + 1]
                        .chars()
                        .take_while(|c| c.is_whitespace())
                        .collect();
                    out.push_str(line);
                    out.push_str(&format!("{indent}diesel::query_builder::QueryId,\n"));
                    out.push_str(&lines[i + 1..=end].concat());
                } else {
                    out.push_str(&attr.replacen(
                        "#[derive(",
                        "#[derive(diesel::query_builder::QueryId, ",
                        1,
                    ));
                }
                query_ids += 1;
            } else {
                out.push_str(&attr);
            }
            i = end + 1;
            continue;
        }
        match tenant_schema
            .as_deref()
            .and_then(|schema| unqualify_postgres_type(line, schema))
        {
            Some(fixed) => {
                out.push_str(&fixed);
                unqualified += 1;
            }
            None => out.push_str(line),
        }
        i += 1;
    }
    Fixed {
        text: out,
        tenant_schema,
        unqualified,
        query_ids,
    }
}

/// The `<schema>` of the `pub mod <schema> {` that `print-schema --schema
/// <schema>` wraps its output in: the first module at the top level (for a
/// hint only: a shared schema's file has one too).
fn wrapper_module(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let name = line.strip_prefix("pub mod ")?.strip_suffix('{')?.trim();
        (name != "sql_types" && !name.is_empty()).then(|| name.to_string())
    })
}

/// `line` without `, schema = "<schema>"` in its `postgres_type(..)`, if it
/// has one.
fn unqualify_postgres_type(line: &str, schema: &str) -> Option<String> {
    if !line.contains("postgres_type(") {
        return None;
    }
    for quoted in [format!("\"{schema}\""), format!("r#\"{schema}\"#")] {
        let qualifier = format!(", schema = {quoted}");
        if line.contains(&qualifier) {
            return Some(line.replacen(&qualifier, "", 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::fix;

    #[test]
    fn a_multi_line_derive_list_gets_query_id_once() {
        let text = "    #[derive(\n        Clone,\n        diesel::sql_types::SqlType,\n    )]\n    pub struct Mood;\n";
        let fixed = fix(text, None);
        assert_eq!(fixed.query_ids, 1);
        assert!(
            fixed.text.starts_with(
                "    #[derive(\n        diesel::query_builder::QueryId,\n        Clone,\n"
            ),
            "{}",
            fixed.text
        );
        assert_eq!(fix(&fixed.text, None).text, fixed.text);
    }

    #[test]
    fn other_schemas_and_other_derives_are_kept() {
        let text = "#[derive(Debug, Clone)]\n#[diesel(postgres_type(name = \"mood\", schema = \"public\"))]\n";
        assert_eq!(fix(text, Some("dev")).text, text);
    }
}
