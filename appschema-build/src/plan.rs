//! The plan file: what `appschema-cli prepare` decided, and the checksums
//! of the files it decided it from.
//!
//! ```toml
//! format = 1
//! migrations_dir = "migrations"
//!
//! [inputs]  # files that are no migration but change the plan
//! "src/schema.rs" = "<sha256>"
//!
//! [[migration]]
//! name = "2024-01-01-000000_plans"
//! version = "20240101000000"
//! scope = "shared"  # or "isolated", or "both" (shared schema and every tenant)
//! files = { "up.sql" = "<sha256>", "down.sql" = "<sha256>" }
//! # run_in_transaction = false only: statements = [...], new_schema_sql = "..."
//! ```
//! Paths are relative to the plan file's directory, with `/` separators.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{sha256_hex, BuildError, PREPARE_COMMAND};

/// The version of the plan file's layout this crate reads and writes.
pub const PLAN_FILE_FORMAT: i64 = 1;

/// The files of a migration directory that the plan depends on.
const MIGRATION_FILES: [&str; 3] = ["up.sql", "down.sql", "metadata.toml"];

/// A plan file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The migrations directory, relative to the plan file's directory.
    pub migrations_dir: String,
    /// Other files the plan was made from (schema files, the migrations
    /// directory's `metadata.toml`): relative path → SHA-256.
    pub inputs: BTreeMap<String, String>,
    /// The migrations, in the order they run.
    pub migrations: Vec<PreparedMigration>,
    /// Shared tables that isolated tables reference: reference tables on
    /// Citus (`appschema::MigrationSet::citus_reference_tables`).
    pub citus_reference_tables: Vec<String>,
}

/// One migration of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreparedMigration {
    /// The directory name, `<version>_<name>`.
    pub name: String,
    /// The version diesel records.
    pub version: String,
    /// `shared` or `isolated`.
    pub scope: String,
    /// Each of its files present (`up.sql`, `down.sql`, `metadata.toml`) → SHA-256.
    pub files: BTreeMap<String, String>,
    /// For a `run_in_transaction = false` migration: `up.sql` split into statements.
    pub statements: Option<Vec<String>>,
    /// For such an isolated migration: its form for a new schema.
    pub new_schema_sql: Option<String>,
}

impl PreparedMigration {
    /// The checksums of the files of the migration directory `dir`, as
    /// [`PreparedMigration::files`] records them.
    pub fn checksums(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
        let mut files = BTreeMap::new();
        for file in MIGRATION_FILES {
            let path = dir.join(file);
            if path.is_file() {
                files.insert(file.to_string(), sha256_hex(&std::fs::read(&path)?));
            }
        }
        Ok(files)
    }
}

/// The migration directories of `dir` as diesel and the planner see them:
/// sub-directories not starting with `.`, by name.
pub(crate) fn migration_dirs(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

impl Plan {
    /// Parses a plan file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Plan, BuildError> {
        let invalid = |message: String| BuildError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let table: toml::Table = text.parse().map_err(|e| invalid(format!("{e}")))?;
        match table.get("format").and_then(toml::Value::as_integer) {
            Some(PLAN_FILE_FORMAT) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "format {other} is not {PLAN_FILE_FORMAT}, the one this appschema-build reads"
                )))
            }
            None => return Err(invalid("no `format`".into())),
        }
        let string = |t: &toml::Table, key: &str| -> Result<String, BuildError> {
            t.get(key)
                .and_then(toml::Value::as_str)
                .map(String::from)
                .ok_or_else(|| invalid(format!("`{key}` missing or not a string")))
        };
        let string_map = |v: Option<&toml::Value>, what: &str| {
            let mut out = BTreeMap::new();
            if let Some(v) = v {
                let t = v
                    .as_table()
                    .ok_or_else(|| invalid(format!("`{what}` is not a table")))?;
                for (k, v) in t {
                    let v = v
                        .as_str()
                        .ok_or_else(|| invalid(format!("`{what}.{k}` is not a string")))?;
                    out.insert(k.clone(), v.to_string());
                }
            }
            Ok::<_, BuildError>(out)
        };
        let mut plan = Plan {
            migrations_dir: string(&table, "migrations_dir")?,
            inputs: string_map(table.get("inputs"), "inputs")?,
            migrations: Vec::new(),
            citus_reference_tables: match table.get("citus_reference_tables") {
                None => Vec::new(),
                Some(v) => v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|s| s.as_str().map(String::from))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        invalid("`citus_reference_tables` is not a list of strings".into())
                    })?,
            },
        };
        let empty = Vec::new();
        let list = match table.get("migration") {
            None => &empty,
            Some(v) => v
                .as_array()
                .ok_or_else(|| invalid("`migration` is not an array of tables".into()))?,
        };
        for item in list {
            let t = item
                .as_table()
                .ok_or_else(|| invalid("`migration` is not an array of tables".into()))?;
            let scope = string(t, "scope")?;
            // "both" (tables marked #[appschema::both]) needs no new format:
            // a reader that predates it refuses the file here, naming the scope.
            if !matches!(scope.as_str(), "shared" | "isolated" | "both") {
                return Err(invalid(format!(
                    "scope `{scope}` is not `shared`, `isolated` or `both`"
                )));
            }
            let statements = match t.get("statements") {
                None => None,
                Some(v) => Some(
                    v.as_array()
                        .and_then(|a| {
                            a.iter()
                                .map(|s| s.as_str().map(String::from))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or_else(|| invalid("`statements` is not a list of strings".into()))?,
                ),
            };
            plan.migrations.push(PreparedMigration {
                name: string(t, "name")?,
                version: string(t, "version")?,
                scope,
                files: string_map(t.get("files"), "files")?,
                statements,
                new_schema_sql: t
                    .get("new_schema_sql")
                    .map(|_| string(t, "new_schema_sql"))
                    .transpose()?,
            });
        }
        Ok(plan)
    }

    /// The plan file's text.
    pub fn to_toml(&self) -> String {
        let mut root = toml::Table::new();
        root.insert("format".into(), PLAN_FILE_FORMAT.into());
        root.insert("migrations_dir".into(), self.migrations_dir.clone().into());
        let map = |m: &BTreeMap<String, String>| {
            toml::Value::Table(
                m.iter()
                    .map(|(k, v)| (k.clone(), toml::Value::from(v.clone())))
                    .collect(),
            )
        };
        root.insert("inputs".into(), map(&self.inputs));
        if !self.citus_reference_tables.is_empty() {
            root.insert(
                "citus_reference_tables".into(),
                toml::Value::Array(
                    self.citus_reference_tables
                        .iter()
                        .map(|t| t.clone().into())
                        .collect(),
                ),
            );
        }
        let migrations = self
            .migrations
            .iter()
            .map(|m| {
                let mut t = toml::Table::new();
                t.insert("name".into(), m.name.clone().into());
                t.insert("version".into(), m.version.clone().into());
                t.insert("scope".into(), m.scope.clone().into());
                t.insert("files".into(), map(&m.files));
                if let Some(s) = &m.statements {
                    t.insert(
                        "statements".into(),
                        toml::Value::Array(s.iter().map(|s| s.clone().into()).collect()),
                    );
                }
                if let Some(s) = &m.new_schema_sql {
                    t.insert("new_schema_sql".into(), s.clone().into());
                }
                toml::Value::Table(t)
            })
            .collect();
        root.insert("migration".into(), toml::Value::Array(migrations));
        format!(
            "# @generated by `{PREPARE_COMMAND}`: the planned migrations, embedded by\n\
             # appschema-build without parsing SQL. Keep it in the repository; run\n\
             # `{PREPARE_COMMAND}` again after changing a migration or a schema file.\n{root}"
        )
    }

    /// Every file and directory the plan depends on, for
    /// `cargo:rerun-if-changed`.
    pub fn watched_paths(&self, base: &Path) -> Vec<PathBuf> {
        let dir = base.join(&self.migrations_dir);
        let mut out = vec![dir.clone()];
        out.extend(
            self.inputs
                .keys()
                .map(|p| base.join(p))
                .filter(|p| p.exists()),
        );
        let directory_metadata = dir.join("metadata.toml");
        if directory_metadata.is_file() {
            out.push(directory_metadata);
        }
        if let Ok(names) = migration_dirs(&dir) {
            for name in names {
                out.push(dir.join(&name));
                // Only files that exist: cargo re-runs a build script on
                // every build while a path it watches is missing.
                out.extend(
                    MIGRATION_FILES
                        .iter()
                        .map(|f| dir.join(&name).join(f))
                        .filter(|p| p.is_file()),
                );
            }
        }
        out
    }

    /// What changed on disk since the plan was written (paths relative to
    /// `base`, the plan file's directory), in words; empty when nothing did.
    pub fn changes_since(&self, base: &Path) -> Vec<String> {
        let mut changes = Vec::new();
        let dir = base.join(&self.migrations_dir);
        let on_disk = match migration_dirs(&dir) {
            Ok(names) => names,
            Err(e) => {
                return vec![format!(
                    "the migrations directory `{}` cannot be read ({e})",
                    dir.display()
                )]
            }
        };
        let planned: BTreeMap<&str, &PreparedMigration> = self
            .migrations
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        for name in &on_disk {
            match planned.get(name.as_str()) {
                None => changes.push(format!("migration `{name}` was added since")),
                Some(m) => match PreparedMigration::checksums(&dir.join(name)) {
                    Ok(files) if files == m.files => {}
                    Ok(files) => {
                        let changed: Vec<&str> = MIGRATION_FILES
                            .iter()
                            .copied()
                            .filter(|f| files.get(*f) != m.files.get(*f))
                            .collect();
                        changes.push(format!(
                            "migration `{name}` changed since ({})",
                            changed.join(", ")
                        ));
                    }
                    Err(e) => changes.push(format!("migration `{name}` cannot be read ({e})")),
                },
            }
        }
        for m in &self.migrations {
            if !on_disk.contains(&m.name) {
                changes.push(format!("migration `{}` was removed since", m.name));
            }
        }
        for (path, checksum) in &self.inputs {
            match std::fs::read(base.join(path)) {
                Ok(bytes) if &sha256_hex(&bytes) == checksum => {}
                Ok(_) => changes.push(format!("`{path}` changed since")),
                Err(_) => changes.push(format!("`{path}` was removed since")),
            }
        }
        let directory_metadata = format!("{}/metadata.toml", self.migrations_dir);
        if !self.inputs.contains_key(&directory_metadata) && dir.join("metadata.toml").is_file() {
            changes.push(format!("`{directory_metadata}` was added since"));
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Plan {
        Plan {
            migrations_dir: "migrations".into(),
            inputs: [("src/schema.rs".to_string(), "ab".repeat(32))].into(),
            citus_reference_tables: vec!["plans".into()],
            migrations: vec![
                PreparedMigration {
                    name: "1_a".into(),
                    version: "1".into(),
                    scope: "shared".into(),
                    files: [("up.sql".to_string(), "cd".repeat(32))].into(),
                    statements: None,
                    new_schema_sql: None,
                },
                PreparedMigration {
                    name: "2_b".into(),
                    version: "2".into(),
                    scope: "isolated".into(),
                    files: [("up.sql".to_string(), "ef".repeat(32))].into(),
                    statements: Some(vec!["CREATE INDEX CONCURRENTLY i ON t (a)".into()]),
                    new_schema_sql: Some("CREATE INDEX  i ON t (a);\n".into()),
                },
            ],
        }
    }

    #[test]
    fn a_plan_reads_back_as_written() {
        let plan = sample();
        let text = plan.to_toml();
        assert!(text.starts_with("# @generated by `appschema-cli prepare`"));
        assert_eq!(Plan::parse(&text, Path::new("p.toml")).unwrap(), plan);
    }

    #[test]
    fn a_both_scope_migration_reads_back_and_an_unknown_scope_is_refused() {
        let mut plan = sample();
        plan.migrations[0].scope = "both".into();
        let text = plan.to_toml();
        assert_eq!(Plan::parse(&text, Path::new("p.toml")).unwrap(), plan);
        let err = Plan::parse(
            &text.replace("scope = \"both\"", "scope = \"everywhere\""),
            Path::new("p.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("scope `everywhere` is not `shared`, `isolated` or `both`"),
            "{err}"
        );
    }

    #[test]
    fn a_plan_of_another_format_is_refused_with_the_command_to_run() {
        let text = sample().to_toml().replace("format = 1", "format = 2");
        let err = Plan::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("format 2 is not 1"), "{err}");
        assert!(err.contains("appschema-cli prepare"), "{err}");
    }
}
