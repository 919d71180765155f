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
use tenant::projects::dsl::{name, projects};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(&std::env::var("DATABASE_URL")?)
}

pub fn run(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    // An application embeds its migrations: `appschema::include_migrations!()`.
    let sql = "CREATE TABLE projects (id bigserial PRIMARY KEY, name text NOT NULL)";
    let (version, dir) = ("2024-01-01-000000", "2024-01-01-000000_projects");
    let migrations = MigrationSet::new(vec![Migration::new(version, dir, Scope::Isolated, sql)]);
    Migrator::new(url).migrate(&migrations, &|_| {})?; // registry, shared tables, every tenant
    let pool = SharedPool::builder(url).build()?;
    let new = NewTenant::new("acme.example.com")?;
    let acme = create_tenant(&mut *pool.get_shared()?, &migrations, &new)?;
    let conn = &mut *pool.get_for(&acme.tenant.schema_name)?; // on "acme_example_com", "public"
    let row = name.eq("launch");
    diesel::insert_into(projects).values(row).execute(conn)?;
    assert_eq!(projects.select(name).load::<String>(conn)?, ["launch"]);
    Ok(())
}
