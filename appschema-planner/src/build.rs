//! The planning build step: plans the application's migrations in its
//! `build.rs` and embeds them, so the binary needs no migration files at run
//! time. The simplest start; it compiles the planner (and libpg_query) into
//! the application's build. The lean alternative embeds the plan file
//! `appschema-cli prepare` writes: `appschema_build::embed_prepared_migrations`.
//!
//! `build.rs` (with `appschema-planner` in `[build-dependencies]`):
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     appschema_planner::build::embed_migrations(&["src/schema.rs"], "migrations")?;
//!     Ok(())
//! }
//! ```
//! The application:
//! ```ignore
//! let migrations: appschema::MigrationSet = appschema::include_migrations!();
//! appschema::Migrator::new(url).migrate(&migrations, &|_| {})?;
//! ```
//! A planner error (mixed scopes, undecidable scope, bad SQL, …) fails the
//! build with its message. Every migration and schema file is registered
//! with `cargo:rerun-if-changed`, so editing one re-runs the step.

use std::path::{Path, PathBuf};

use appschema_build::EmbeddedSource;
use appschema_core::MigrationSet;

use crate::PlanErrors;

pub use appschema_build::GENERATED_FILE;

/// Why the build step failed. Its `Debug` form is its message, so a
/// `build.rs` whose `main` returns `Result<(), Box<dyn Error>>` prints the
/// planner's refusal as written, not as a struct dump.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Not run by cargo (`CARGO_MANIFEST_DIR` / `OUT_DIR` unset).
    #[error("environment variable `{0}` is not set: call embed_migrations from a build script")]
    NotInBuildScript(&'static str),
    /// The planner refused the migrations.
    #[error("{0}")]
    Plan(PlanErrors),
    /// Writing the generated file failed.
    #[error(transparent)]
    Write(appschema_build::BuildError),
}

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<PlanErrors> for BuildError {
    fn from(e: PlanErrors) -> BuildError {
        BuildError::Plan(e)
    }
}

/// Plans `migrations_dir` against the tables marked in `schema_files` (both
/// relative to the crate's `CARGO_MANIFEST_DIR`) and writes the embedded set
/// to `OUT_DIR`, for `include_migrations!()`.
pub fn embed_migrations(schema_files: &[&str], migrations_dir: &str) -> Result<(), BuildError> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or(BuildError::NotInBuildScript("CARGO_MANIFEST_DIR"))?;
    let out_dir = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or(BuildError::NotInBuildScript("OUT_DIR"))?;
    let files: Vec<PathBuf> = schema_files.iter().map(|f| manifest_dir.join(f)).collect();
    let dir = manifest_dir.join(migrations_dir);
    for path in rerun_paths(&dir, &files) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    generate(&dir, &files, &manifest_dir, &out_dir.join(GENERATED_FILE))
}

/// The planning and writing of [`embed_migrations`], without cargo's
/// environment: writes the embedded set of `migrations_dir` to `output`.
pub fn generate(
    migrations_dir: &Path,
    schema_files: &[PathBuf],
    base_dir: &Path,
    output: &Path,
) -> Result<(), BuildError> {
    let set = crate::load_with_schema_files(migrations_dir, schema_files, base_dir)?;
    appschema_build::write_embedded(
        &embedded_sources(&set),
        &set.citus_reference_tables()
            .map(String::from)
            .collect::<Vec<_>>(),
        &format!("{}", migrations_dir.display()),
        output,
    )
    .map_err(BuildError::Write)
}

/// A planned set as the build steps embed it (the same form
/// `appschema_build::load_prepared` reads from a plan file).
pub fn embedded_sources(set: &MigrationSet) -> Vec<EmbeddedSource> {
    set.migrations()
        .iter()
        .map(|m| {
            let outside = !m.run_in_transaction();
            EmbeddedSource {
                version: m.version().to_string(),
                name: m.name().to_string(),
                scope: m.scope().as_str().to_string(),
                up_sql: m.up_sql().to_string(),
                down_sql: m.down_sql().map(String::from),
                statements: m.statements().map(|s| s.map(String::from).collect()),
                new_schema_sql: m.new_schema_sql().filter(|_| outside).map(String::from),
            }
        })
        .collect()
}

/// The directory itself (new migrations), each migration directory and its
/// files, and the schema files (with the `file = "…"` files they name, which
/// live beside them in practice: their directory is watched too).
fn rerun_paths(dir: &Path, schema_files: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            out.push(path.clone());
            if let Ok(files) = std::fs::read_dir(&path) {
                out.extend(files.flatten().map(|f| f.path()));
            }
        }
    }
    for file in schema_files {
        out.push(file.clone());
        if let Some(parent) = file.parent() {
            out.push(parent.to_path_buf());
        }
    }
    out
}
