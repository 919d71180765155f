//! The quickstart: start (or find) a PostgreSQL server, connect through
//! diesel + r2d2, and install appschema's tenant registry.
//!
//! Run it with `cargo run --example quickstart`. With `DATABASE_URL` set it
//! uses that server; otherwise it starts a throwaway one and deletes it on exit.

use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool};

diesel::define_sql_function!(fn version() -> Text);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = appschema_tempdb::Server::from_env_or_start()?;
    match &server {
        appschema_tempdb::Server::External { .. } => {
            println!("Using the PostgreSQL server named by DATABASE_URL.")
        }
        appschema_tempdb::Server::Temp(cluster) => println!(
            "Started a throwaway PostgreSQL server in {} (deleted on exit).",
            cluster.dir().display()
        ),
        appschema_tempdb::Server::Citus(citus) => println!(
            "Started a throwaway Citus cluster; coordinator in {} (deleted on exit).",
            citus.coordinator().dir().display()
        ),
    }

    let pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(server.url()))?;
    let mut conn = pool.get()?;
    let version: String = diesel::select(version()).get_result(&mut conn)?;
    println!("Connected through diesel + r2d2 to: {version}");

    appschema::registry::install(&mut conn)?;
    let tenants: i64 = diesel::sql_query("SELECT count(*) AS n FROM public.appschema_tenants")
        .get_result::<Count>(&mut conn)?
        .n;
    println!("Installed the tenant registry (public.appschema_tenants): {tenants} tenants so far.");
    println!("Done.");
    Ok(())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}
