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
    /// Rewrites diesel's print-schema output in place for appschema.
    ///
    /// Rewrites, in place, what diesel's print-schema output needs for
    /// appschema: custom SQL types printed from a tenant's schema lose
    /// `schema = "<tenant>"` (such a type exists once per tenant and is
    /// resolved through the connection's path) and implement `QueryId`
    /// without a static id (so that diesel never reuses a statement
    /// prepared with another tenant's type); every other custom SQL type
    /// derives `diesel::query_builder::QueryId` (no insert or filter on it
    /// compiles without). Running it again changes nothing.
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
        "{} per-tenant type(s) unqualified{}, {} `QueryId` derive(s) added",
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
///
/// A custom SQL type of the tenant's schema exists once per tenant: it
/// loses `schema = ".."`, and gets a `QueryId` without a static id instead
/// of the derived one. Diesel caches a prepared statement whose query type
/// has a static id by that type alone, with the OIDs of its bind types as
/// they were when it was prepared: on a connection that moves from tenant
/// A to tenant B, B's insert would reuse the statement prepared with A's
/// `mood` (`expression is of type a.mood`). Without a static id the cache
/// key is the SQL and the bind types' OIDs, which differ per tenant.
pub(crate) fn fix(text: &str, tenant_schema: Option<&str>) -> Fixed {
    let mut out = String::with_capacity(text.len() + 256);
    let (mut unqualified, mut query_ids) = (0, 0);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if !line.trim_start().starts_with("#[derive(") {
            out.push_str(line);
            i += 1;
            continue;
        }
        // A derive list rustfmt may have broken over several lines.
        let mut end = i;
        while end + 1 < lines.len() && !lines[end].contains(")]") {
            end += 1;
        }
        let derive = lines[i..=end].concat();
        let items = derive_items(&derive);
        // The type's other attributes, then its `pub struct Name;`.
        let mut struct_line = end + 1;
        while struct_line < lines.len() && lines[struct_line].trim_start().starts_with("#[") {
            struct_line += 1;
        }
        let name = lines.get(struct_line).and_then(|l| struct_name(l));
        let (Some(name), true) = (name, items.iter().any(|d| is(d, "SqlType"))) else {
            out.push_str(&derive);
            i = end + 1;
            continue;
        };
        let attrs = lines[end + 1..struct_line].concat();
        let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
        let manual_impl = format!("impl diesel::query_builder::QueryId for {name} {{");
        match tenant_schema.and_then(|schema| unqualify_postgres_type(&attrs, schema)) {
            Some(unqualified_attrs) => {
                let kept: Vec<&str> = items
                    .iter()
                    .map(String::as_str)
                    .filter(|d| !is(d, "QueryId"))
                    .collect();
                out.push_str(&format!("{indent}#[derive({})]\n", kept.join(", ")));
                out.push_str(&unqualified_attrs);
                out.push_str(lines[struct_line]);
                if !text.contains(&manual_impl) {
                    out.push_str(&format!(
                        "{indent}// appschema: one `{name}` per tenant; no static query id, so that\n\
                         {indent}// diesel caches its statements per bind type OID, per tenant.\n\
                         {indent}{manual_impl}\n\
                         {indent}    type QueryId = ();\n\
                         {indent}    const HAS_STATIC_QUERY_ID: bool = false;\n\
                         {indent}}}\n"
                    ));
                }
                unqualified += 1;
            }
            None => {
                if items.iter().any(|d| is(d, "QueryId")) || text.contains(&manual_impl) {
                    out.push_str(&derive);
                } else if end > i && line.trim_end().ends_with("#[derive(") {
                    // One derive a line: add one more line, indented alike.
                    let inner: String = lines[i + 1]
                        .chars()
                        .take_while(|c| c.is_whitespace())
                        .collect();
                    out.push_str(line);
                    out.push_str(&format!("{inner}diesel::query_builder::QueryId,\n"));
                    out.push_str(&lines[i + 1..=end].concat());
                    query_ids += 1;
                } else {
                    out.push_str(&derive.replacen(
                        "#[derive(",
                        "#[derive(diesel::query_builder::QueryId, ",
                        1,
                    ));
                    query_ids += 1;
                }
                out.push_str(&attrs);
                out.push_str(lines[struct_line]);
            }
        }
        i = struct_line + 1;
    }
    Fixed {
        text: out,
        tenant_schema: tenant_schema.map(str::to_string),
        unqualified,
        query_ids,
    }
}

/// The paths a `#[derive(..)]` attribute lists.
fn derive_items(attr: &str) -> Vec<String> {
    let inner = attr.split_once("#[derive(").map_or("", |(_, rest)| {
        rest.rsplit_once(")]").map_or(rest, |(list, _)| list)
    });
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether the derive path `item` names `name` (`SqlType`,
/// `diesel::sql_types::SqlType`).
fn is(item: &str, name: &str) -> bool {
    item == name || item.ends_with(&format!("::{name}"))
}

/// `Name` of a `pub struct Name;` line.
fn struct_name(line: &str) -> Option<&str> {
    let name = line.trim().strip_prefix("pub struct ")?.strip_suffix(';')?;
    name.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
        .then_some(name)
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
        let text = "    #[derive(\n        Clone,\n        diesel::sql_types::SqlType,\n    )]\n    #[diesel(postgres_type(name = \"mood\", schema = \"public\"))]\n    pub struct Mood;\n";
        let fixed = fix(text, Some("dev"));
        assert_eq!(fixed.query_ids, 1);
        assert!(
            fixed.text.starts_with(
                "    #[derive(\n        diesel::query_builder::QueryId,\n        Clone,\n"
            ),
            "{}",
            fixed.text
        );
        assert_eq!(fix(&fixed.text, Some("dev")).text, fixed.text);
    }

    #[test]
    fn a_per_tenant_type_gets_a_query_id_without_a_static_id() {
        let text = "#[derive(\n    diesel::query_builder::QueryId,\n    Clone,\n    diesel::sql_types::SqlType,\n)]\n#[diesel(postgres_type(name = \"mood\", schema = \"dev\"))]\npub struct Mood;\n";
        let fixed = fix(text, Some("dev"));
        assert_eq!((fixed.unqualified, fixed.query_ids), (1, 0));
        assert!(
            fixed.text.starts_with(
                "#[derive(Clone, diesel::sql_types::SqlType)]\n#[diesel(postgres_type(name = \"mood\"))]\npub struct Mood;\n"
            ),
            "{}",
            fixed.text
        );
        assert!(fixed
            .text
            .contains("const HAS_STATIC_QUERY_ID: bool = false;"));
        assert_eq!(fix(&fixed.text, Some("dev")).text, fixed.text);
    }

    #[test]
    fn other_schemas_and_other_derives_are_kept() {
        let text = "#[derive(Debug, Clone)]\n#[diesel(postgres_type(name = \"mood\", schema = \"public\"))]\n";
        assert_eq!(fix(text, Some("dev")).text, text);
    }
}
