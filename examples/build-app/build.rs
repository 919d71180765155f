//! Plans `migrations/` against the marked tables of `src/schema.rs` and
//! embeds the result; a planner error fails the build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    appschema::build::embed_migrations(&["src/schema.rs"], "migrations")?;
    Ok(())
}
