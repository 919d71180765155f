//! An application that embeds its migrations with appschema's build step:
//! `build.rs` plans them, [`migrations`] returns them, and nothing is read
//! from disk at run time.

/// The migrations planned and embedded at build time.
pub fn migrations() -> appschema::MigrationSet {
    appschema::include_migrations!()
}
