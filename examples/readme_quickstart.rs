//! The README's quickstart, complete and compiled (tests/readme.rs checks
//! that the README's block is this file below its doc comment, and runs it).
//! `DATABASE_URL=postgres:///app cargo run --example readme_quickstart`.

use appschema::provision::{create_tenant, NewTenant};
use appschema::{Migration, MigrationSet, Migrator, Scope, SharedPool};
use diesel::prelude::*;

#[appschema::isolated]
pub mod tenant {
    diesel::table! { projects (id) { id -> Int8, name -> Text } }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(&std::env::var("DATABASE_URL")?)
}

pub fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    // An application embeds its migrations: `appschema::include_migrations!()`.
    let sql = "CREATE TABLE projects (id bigserial PRIMARY KEY, name text NOT NULL)";
    let migrations = MigrationSet::new(vec![Migration::new(
        "2024-01-01-000000",
        "2024-01-01-000000_projects",
        Scope::Isolated,
        sql,
    )]);
    Migrator::new(url).migrate(&migrations, &|_| {})?; // registry, shared tables, every tenant
    let pool = SharedPool::builder(url).build()?;
    let acme = create_tenant(
        &mut *pool.get_shared()?,
        &migrations,
        &NewTenant::new("acme.example.com")?,
    )?;
    let conn = &mut *pool.get_for(&acme.tenant.schema_name)?; // on "acme_example_com", "public"
    diesel::insert_into(tenant::projects::table)
        .values(tenant::projects::name.eq("launch"))
        .execute(conn)?;
    let names: Vec<String> = tenant::projects::table
        .select(tenant::projects::name)
        .load(conn)?;
    assert_eq!(names, ["launch"]);
    Ok(())
}
