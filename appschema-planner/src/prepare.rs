//! Offline mode: the plan written to a file kept in the repository, which
//! `appschema-build` embeds without parsing SQL (see [`prepare`]).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use appschema_build::{sha256_hex, Plan, PreparedMigration};

use crate::schema_source::TableScopes;
use crate::{PlanError, PlanErrors};

/// Why no plan could be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The planner refused the migrations.
    #[error("{0}")]
    Plan(PlanErrors),
    /// A file the plan depends on cannot be read.
    #[error("cannot read `{path}`: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file the plan depends on lies outside the plan file's directory,
    /// so the build step could not find it from there.
    #[error(
        "`{path}` is outside `{plan_dir}`, the plan file's directory: keep the migrations \
         and schema files under it, or write the plan file higher up"
    )]
    Outside {
        /// The file or directory.
        path: PathBuf,
        /// The plan file's directory.
        plan_dir: PathBuf,
    },
}

/// Plans `migrations_dir` against the markings of `schema_files` (relative
/// paths resolved against `base_dir`, like the markings' `file = "…"`
/// paths) and returns the plan to write at `plan_file`: each migration's
/// version and scope, for `run_in_transaction = false` ones the statements
/// and new-schema form, and the SHA-256 of every file the plan depends on,
/// with paths relative to `plan_file`'s directory. Write it with
/// [`Plan::to_toml`]; `appschema_build::embed_prepared_migrations` embeds it.
pub fn prepare(
    migrations_dir: &Path,
    schema_files: &[PathBuf],
    base_dir: &Path,
    plan_file: &Path,
) -> Result<Plan, PrepareError> {
    let absolute = |p: &Path| normalize(&base_dir.join(p));
    let plan_dir = absolute(plan_file.parent().unwrap_or(Path::new("")));
    let relative = |p: &Path| -> Result<String, PrepareError> {
        let abs = absolute(p);
        let rel = abs
            .strip_prefix(&plan_dir)
            .map_err(|_| PrepareError::Outside {
                path: abs.clone(),
                plan_dir: plan_dir.clone(),
            })?;
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Ok(if parts.is_empty() {
            ".".to_string()
        } else {
            parts.join("/")
        })
    };
    let schema_files: Vec<PathBuf> = schema_files.iter().map(|f| absolute(f)).collect();
    let dir = absolute(migrations_dir);
    let tables = TableScopes::from_files(&schema_files, base_dir)
        .map_err(|e| PrepareError::Plan(PlanErrors(vec![PlanError::SchemaSource(e)])))?;
    let set = crate::load(&dir, &tables).map_err(PrepareError::Plan)?;

    let checksum = |path: &Path| {
        std::fs::read(path)
            .map(|bytes| sha256_hex(&bytes))
            .map_err(|error| PrepareError::Read {
                path: path.to_path_buf(),
                error,
            })
    };
    let mut input_paths: BTreeSet<PathBuf> = schema_files.into_iter().collect();
    input_paths.extend(tables.iter().map(|(_, t)| absolute(&t.source)));
    let directory_metadata = dir.join(crate::DIRECTORY_METADATA);
    if directory_metadata.is_file() {
        input_paths.insert(directory_metadata);
    }
    let mut plan = Plan {
        migrations_dir: relative(&dir)?,
        citus_reference_tables: set.citus_reference_tables().map(String::from).collect(),
        ..Plan::default()
    };
    for path in &input_paths {
        plan.inputs.insert(relative(path)?, checksum(path)?);
    }
    for m in set.migrations() {
        let path = dir.join(m.name());
        let files = PreparedMigration::checksums(&path)
            .map_err(|error| PrepareError::Read { path, error })?;
        let outside = !m.run_in_transaction();
        plan.migrations.push(PreparedMigration {
            name: m.name().to_string(),
            version: m.version().to_string(),
            scope: m.scope().as_str().to_string(),
            files,
            statements: m.statements().map(|s| s.map(String::from).collect()),
            new_schema_sql: m.new_schema_sql().filter(|_| outside).map(String::from),
        });
    }
    Ok(plan)
}

/// `a/./b/../c` → `a/c`, without touching the file system (no symlinks
/// resolved: the plan's paths are the ones the user wrote).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
