//! Embeds the migrations as `appschema-cli prepare` planned them
//! (`appschema-plan.toml`), without parsing SQL; a migration or schema file
//! changed since the plan was written fails the build, saying to run
//! `appschema-cli prepare`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    appschema_build::embed_prepared_migrations("appschema-plan.toml")?;
    Ok(())
}
