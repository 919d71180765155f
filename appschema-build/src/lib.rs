//! # appschema-build
//!
//! The lean build step of [appschema](https://docs.rs/appschema): embeds an
//! application's migrations from the **plan file** that `appschema-cli
//! prepare` wrote and that is kept in the repository, without parsing SQL or
//! Rust, so an application built this way needs neither libclang nor the
//! planner (in the spirit of `cargo sqlx prepare`).
//!
//! The plan file records, for each migration, its version, scope and, for a
//! `run_in_transaction = false` migration, its statements and its form for a
//! new schema; and a SHA-256 of every file the plan was made from (each
//! migration's `up.sql`, `down.sql`, `metadata.toml`, the migrations
//! directory's `metadata.toml`, the schema files). A migration added,
//! removed or edited since fails the build, saying to run
//! `appschema-cli prepare`.
//!
//! `build.rs` (with `appschema-build` in `[build-dependencies]`):
//! ```no_run
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     appschema_build::embed_prepared_migrations("appschema-plan.toml")?;
//!     Ok(())
//! }
//! ```
//! The application:
//! ```ignore
//! let migrations: appschema::MigrationSet = appschema::include_migrations!();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod plan;
mod sha256;

use std::path::{Path, PathBuf};

pub use plan::{Plan, PreparedMigration, PLAN_FILE_FORMAT};
pub use sha256::sha256_hex;

/// The plan file's usual name, in the package root.
pub const PLAN_FILE: &str = "appschema-plan.toml";

/// The file a build step writes in `OUT_DIR`, which
/// `appschema::include_migrations!()` includes.
pub const GENERATED_FILE: &str = "appschema_migrations.rs";

/// The command that writes the plan file, named in every refusal.
pub const PREPARE_COMMAND: &str = "appschema-cli prepare";

/// Why the build step failed. Its `Debug` form is its message, so a
/// `build.rs` whose `main` returns `Result<(), Box<dyn Error>>` prints it as
/// written.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Not run by cargo (`CARGO_MANIFEST_DIR` / `OUT_DIR` unset).
    #[error("environment variable `{0}` is not set: call the build step from a build script")]
    NotInBuildScript(&'static str),
    /// The plan file or a file it names cannot be read.
    #[error("cannot read `{path}`: {error} (write the plan file with `{PREPARE_COMMAND}`)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The plan file is not one `appschema-cli prepare` writes.
    #[error("invalid plan file `{path}`: {message}; write it again with `{PREPARE_COMMAND}`")]
    Invalid {
        /// The plan file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The migrations or schema files changed since the plan was written.
    #[error(
        "the plan file `{path}` is out of date: {}; run `{PREPARE_COMMAND}` and commit the file",
        changes.join("; ")
    )]
    Stale {
        /// The plan file.
        path: PathBuf,
        /// Each change, in words (`migration `…` was added since`).
        changes: Vec<String>,
    },
    /// Writing the generated file failed.
    #[error("cannot write `{path}`: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A migration ready to embed: what `appschema::MigrationSet::from_embedded`
/// rebuilds at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedSource {
    /// The version diesel records.
    pub version: String,
    /// The directory name.
    pub name: String,
    /// `shared` or `isolated`.
    pub scope: String,
    /// `up.sql`.
    pub up_sql: String,
    /// `down.sql`, when present.
    pub down_sql: Option<String>,
    /// For a `run_in_transaction = false` migration, its statements.
    pub statements: Option<Vec<String>>,
    /// For such an isolated migration, its form for a new schema.
    pub new_schema_sql: Option<String>,
}

/// Reads the plan file `plan_file` (relative to the crate's
/// `CARGO_MANIFEST_DIR`), checks it against the files on disk, and writes
/// the embedded migrations to `OUT_DIR` for
/// `appschema::include_migrations!()`. Every file the plan was made from is
/// registered with `cargo:rerun-if-changed`.
pub fn embed_prepared_migrations(plan_file: &str) -> Result<(), BuildError> {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or(BuildError::NotInBuildScript("CARGO_MANIFEST_DIR"))?;
    let out_dir = std::env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or(BuildError::NotInBuildScript("OUT_DIR"))?;
    let plan_path = manifest_dir.join(plan_file);
    println!("cargo:rerun-if-changed={}", plan_path.display());
    if let Ok(text) = std::fs::read_to_string(&plan_path) {
        if let Ok(plan) = Plan::parse(&text, &plan_path) {
            for path in plan.watched_paths(plan_dir(&plan_path)) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    generate_prepared(&plan_path, &out_dir.join(GENERATED_FILE))
}

/// What [`embed_prepared_migrations`] does, without cargo's environment:
/// checks `plan_file` against the files it names and writes the embedded
/// set to `output`.
pub fn generate_prepared(plan_file: &Path, output: &Path) -> Result<(), BuildError> {
    let (migrations, reference_tables) = load_prepared_with_reference_tables(plan_file)?;
    write_embedded(
        &migrations,
        &reference_tables,
        &format!("{}", plan_file.display()),
        output,
    )
}

/// Reads `plan_file`, checks it against the files it names (paths relative
/// to the plan file's directory) and returns the migrations to embed.
pub fn load_prepared(plan_file: &Path) -> Result<Vec<EmbeddedSource>, BuildError> {
    load_prepared_with_reference_tables(plan_file).map(|(migrations, _)| migrations)
}

/// [`load_prepared`], with the plan's `citus_reference_tables` (see
/// [`Plan::citus_reference_tables`]).
pub fn load_prepared_with_reference_tables(
    plan_file: &Path,
) -> Result<(Vec<EmbeddedSource>, Vec<String>), BuildError> {
    let text = std::fs::read_to_string(plan_file).map_err(|error| BuildError::Read {
        path: plan_file.to_path_buf(),
        error,
    })?;
    let plan = Plan::parse(&text, plan_file)?;
    let base = plan_dir(plan_file);
    let changes = plan.changes_since(base);
    if !changes.is_empty() {
        return Err(BuildError::Stale {
            path: plan_file.to_path_buf(),
            changes,
        });
    }
    let dir = base.join(&plan.migrations_dir);
    let migrations = plan
        .migrations
        .iter()
        .map(|m| {
            let read = |file: &str| {
                let path = dir.join(&m.name).join(file);
                std::fs::read_to_string(&path).map_err(|error| BuildError::Read { path, error })
            };
            Ok(EmbeddedSource {
                version: m.version.clone(),
                name: m.name.clone(),
                scope: m.scope.clone(),
                up_sql: read("up.sql")?,
                down_sql: match m.files.contains_key("down.sql") {
                    true => Some(read("down.sql")?),
                    false => None,
                },
                statements: m.statements.clone(),
                new_schema_sql: m.new_schema_sql.clone(),
            })
        })
        .collect::<Result<Vec<_>, BuildError>>()?;
    Ok((migrations, plan.citus_reference_tables))
}

fn plan_dir(plan_file: &Path) -> &Path {
    match plan_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes the Rust expression `include_migrations!()` includes (a pair: a
/// `&[EmbeddedMigration]` literal, the macro bringing the name into scope,
/// and the `citus_reference_tables` as `&[&str]`) to `output`; `from` names the
/// source in the file's header. The one writer of that file, for both build
/// steps.
pub fn write_embedded(
    migrations: &[EmbeddedSource],
    citus_reference_tables: &[String],
    from: &str,
    output: &Path,
) -> Result<(), BuildError> {
    let code = format!(
        "// @generated by appschema's build step from {from}: do not edit.\n({}, &{:?})\n",
        rust_literal(migrations),
        citus_reference_tables
    );
    // Unchanged content keeps its mtime: no recompilation of the crate.
    if std::fs::read_to_string(output).is_ok_and(|old| old == code) {
        return Ok(());
    }
    std::fs::write(output, code).map_err(|error| BuildError::Write {
        path: output.to_path_buf(),
        error,
    })
}

/// The `&[EmbeddedMigration]` literal of `migrations`.
pub fn rust_literal(migrations: &[EmbeddedSource]) -> String {
    let option = |s: &Option<String>| match s {
        Some(s) => format!("Some({s:?})"),
        None => "None".to_string(),
    };
    let mut out = String::from("&[\n");
    for m in migrations {
        let statements = match &m.statements {
            Some(list) => format!(
                "Some(&[{}])",
                list.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "None".to_string(),
        };
        out.push_str(&format!(
            "    EmbeddedMigration {{ version: {:?}, name: {:?}, scope: {:?}, \
             up_sql: {:?}, down_sql: {}, statements: {statements}, new_schema_sql: {} }},\n",
            m.version,
            m.name,
            m.scope,
            m.up_sql,
            option(&m.down_sql),
            option(&m.new_schema_sql),
        ));
    }
    out.push(']');
    out
}
