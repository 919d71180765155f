//! An application that embeds its migrations with appschema's lean build
//! step: `appschema-cli prepare` planned them into `appschema-plan.toml`,
//! `build.rs` embeds them from it (no planner, no libclang), [`migrations`]
//! returns them, and nothing is read from disk at run time.

#![forbid(unsafe_code)]

/// The migrations embedded at build time.
pub fn migrations() -> appschema::MigrationSet {
    appschema::include_migrations!()
}
