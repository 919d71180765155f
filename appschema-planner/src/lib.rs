//! # appschema-planner
//!
//! The migration planner of [appschema](https://docs.rs/appschema): reads a
//! diesel migrations directory and the `#[appschema::shared]` /
//! `#[appschema::isolated]` markings of the schema files, decides each
//! migration's scope, checks the history, and returns the
//! [`MigrationSet`] the runtime (`appschema-core`) applies.
//!
//! It parses SQL with PostgreSQL's own grammar (`pg_query`, which builds
//! libpg_query's C sources through bindgen and needs libclang) and Rust with
//! `syn`, so it belongs to tools, not to what an application links:
//! `appschema-cli` uses it, and so does the planning build step
//! ([`build::embed_migrations`]). An application can instead embed the plan
//! that [`prepare()`] writes (`appschema-cli prepare`) with the lean
//! `appschema-build` crate and never compile the planner.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let orders = dir.path().join("migrations/2024-01-01-000000_orders");
//! std::fs::create_dir_all(&orders)?;
//! std::fs::write(orders.join("up.sql"), "CREATE TABLE orders (id int8 PRIMARY KEY);")?;
//! std::fs::write(
//!     dir.path().join("schema.rs"),
//!     "#[appschema::isolated] pub mod tenant { diesel::table! { orders (id) { id -> Int8 } } }",
//! )?;
//! let set = appschema_planner::load_with_schema_files(
//!     &dir.path().join("migrations"),
//!     &[dir.path().join("schema.rs")],
//!     dir.path(),
//! )?;
//! assert_eq!(set.migrations()[0].scope(), appschema_core::Scope::Isolated);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod build;
mod planner;
mod prepare;
pub mod schema_source;
pub mod sql;

pub use appschema_core::{Migration, MigrationSet, Scope};
pub use planner::{
    load, load_with_citus_notes, load_with_schema_files, load_with_schema_files_and_citus_notes,
    CitusNotes, CitusWarning, PlanError, PlanErrors, DIRECTORY_METADATA,
};
pub use prepare::{prepare, PrepareError};
