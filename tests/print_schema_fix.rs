//! A file as `diesel print-schema --schema dev_localhost` writes it, after
//! `appschema-cli schema fix --tenant-schema dev_localhost` (the fixture
//! appschema-cli's tests check the command's output against), used as is
//! by an isolated module: its per-tenant enum binds and reads in every
//! tenant, on one pooled connection, on a real server. Unfixed, the enum
//! would be looked up in `dev_localhost` (no such schema here) and would not
//! implement `QueryId` (no insert compiles); with a derived `QueryId` (a
//! static query id), diesel would reuse the insert prepared for the first
//! tenant, bound with its `mood`, for the next.

use std::io::Write;
use std::sync::LazyLock;

use appschema::{MigrationSet, Scope};
use appschema_test::TestDatabase;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::serialize::{self, IsNull, Output, ToSql};

#[appschema::isolated(file = "appschema-cli/tests/fixtures/print_schema/tenant.fixed.rs")]
pub mod tenant {}

use tenant::people;

#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = tenant::sql_types::Mood)]
enum Mood {
    Happy,
    Sad,
}

impl ToSql<tenant::sql_types::Mood, Pg> for Mood {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(match self {
            Mood::Happy => b"happy",
            Mood::Sad => b"sad",
        })?;
        Ok(IsNull::No)
    }
}

impl FromSql<tenant::sql_types::Mood, Pg> for Mood {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        match bytes.as_bytes() {
            b"happy" => Ok(Mood::Happy),
            b"sad" => Ok(Mood::Sad),
            other => Err(format!("unknown mood {}", String::from_utf8_lossy(other)).into()),
        }
    }
}

static MIGRATIONS: LazyLock<MigrationSet> = LazyLock::new(|| {
    MigrationSet::from_parts([
        (
            "2024-01-01-000000_currency",
            Scope::Shared,
            "CREATE TYPE public.currency AS ENUM ('eur', 'usd')",
        ),
        (
            "2024-01-02-000000_people",
            Scope::Isolated,
            "CREATE TYPE mood AS ENUM ('happy', 'sad');
             CREATE TYPE priority AS ENUM ('low', 'high');
             CREATE TABLE people (id bigserial PRIMARY KEY, currency public.currency,
                                  mood mood NOT NULL, priority priority)",
        ),
        (
            "2024-01-03-000000_projects",
            Scope::Isolated,
            "CREATE TABLE projects (id bigserial PRIMARY KEY,
                                    person_id int8 NOT NULL REFERENCES people (id), name text NOT NULL)",
        ),
    ])
});

#[test]
fn a_fixed_print_schema_file_binds_per_tenant_enums_in_every_tenant() {
    let db = TestDatabase::builder(&MIGRATIONS)
        .tenants(["acme.localhost", "globex.localhost"])
        .pool_size(1) // one connection: the type is bound for acme, then for globex
        .build();
    for (tenant, mood) in [
        ("acme.localhost", Mood::Happy),
        ("globex.localhost", Mood::Sad),
        ("acme.localhost", Mood::Sad),
    ] {
        let mut conn = db.conn_for(tenant);
        diesel::insert_into(people::table)
            .values(people::mood.eq(mood))
            .execute(&mut *conn)
            .unwrap_or_else(|e| panic!("{tenant}: {e}"));
    }
    // Read back on a fresh connection per tenant: a SELECT whose result
    // is a per-tenant type is planned with one tenant's type, and
    // PostgreSQL refuses to run it for another (`cached plan must not
    // change result type`, after which the pools close the connection: see
    // the README), which is not what this test is about.
    let moods = |tenant: &str| -> Vec<Mood> {
        let mut conn = db.conn();
        let schema = &db.tenant(tenant).schema_name;
        diesel::sql_query(format!("SET search_path TO \"{schema}\", public"))
            .execute(&mut conn)
            .unwrap();
        people::table
            .select(people::mood)
            .order_by(people::id)
            .load(&mut conn)
            .unwrap()
    };
    assert_eq!(moods("acme.localhost"), [Mood::Happy, Mood::Sad]);
    assert_eq!(moods("globex.localhost"), [Mood::Sad]);
}
