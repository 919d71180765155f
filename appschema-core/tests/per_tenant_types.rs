//! Statements diesel prepared for one tenant, returning a type that exists
//! once per tenant schema, are never run for another (issue 27): the sync
//! pools forget a connection's prepared statements when it changes tenant
//! and the database has per-tenant types, deallocating them on the server
//! too; and keep them when it has none.

use std::time::Duration;

use appschema_core::connection::{ConnectionError, SharedPool, TransactionScopedPool};
use appschema_core::SchemaName;
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

/// Every tenant's own enum, declared without a schema.
#[derive(Debug, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(name = "mood"))]
pub struct Mood;

diesel::table! {
    use diesel::sql_types::{Int4, Text};
    use super::Mood;
    moods (id) {
        id -> Int4,
        m -> Mood,
        note -> Text,
    }
}

/// A [`Mood`] read as its label.
#[derive(Debug, FromSqlRow)]
pub struct Label(String);

impl FromSql<Mood, Pg> for Label {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        Ok(Label(String::from_utf8(bytes.as_bytes().to_vec())?))
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Names {
    #[diesel(sql_type = Text)]
    v: String,
}

/// Tenants `a` and `b`; with `enums`, each has its own `mood` with labels
/// of its own, else `m` is plain text in both.
fn db(enums: bool) -> TestDb {
    let db = TestDb::new();
    let ty = |s: &str, labels: &str| {
        if enums {
            format!("CREATE TYPE {s}.mood AS ENUM ({labels}); ")
        } else {
            String::new()
        }
    };
    let col = |s: &str| {
        if enums {
            format!("{s}.mood")
        } else {
            "text".into()
        }
    };
    db.conn()
        .batch_execute(&format!(
            "CREATE SCHEMA a; {} CREATE TABLE a.moods (id int PRIMARY KEY, m {}, note text);
             INSERT INTO a.moods VALUES (1, 'happy', 'x'), (2, 'sad', 'y');
             CREATE SCHEMA b; {} CREATE TABLE b.moods (id int PRIMARY KEY, m {}, note text);
             INSERT INTO b.moods VALUES (1, 'gleeful', 'z');",
            ty("a", "'happy', 'sad'"),
            col("a"),
            ty("b", "'grim', 'gleeful'"),
            col("b"),
        ))
        .unwrap();
    db
}

fn tenant(name: &str) -> SchemaName {
    SchemaName::new(name).unwrap()
}

const WANT: [(&str, &str); 2] = [("a", "happy,sad"), ("b", "gleeful")];

/// The statement diesel caches: the same text for both tenants.
fn read_moods(conn: &mut PgConnection) -> QueryResult<String> {
    Ok(moods::table
        .select(moods::m)
        .order(moods::id)
        .load::<Label>(conn)?
        .into_iter()
        .map(|Label(l)| l)
        .collect::<Vec<_>>()
        .join(","))
}

/// diesel's statements the server holds for this session (queried with
/// `sql_query`, which diesel does not cache).
fn diesel_statements(conn: &mut PgConnection) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_catalog.pg_prepared_statements \
         WHERE name LIKE E'\\\\_\\\\_diesel\\\\_stmt\\\\_%'",
    )
    .get_result::<Count>(conn)
    .unwrap()
    .n
}

fn statement_names(conn: &mut PgConnection) -> String {
    diesel::sql_query(
        "SELECT coalesce(string_agg(name, ',' ORDER BY name), '') AS v \
         FROM pg_catalog.pg_prepared_statements WHERE name LIKE E'\\\\_\\\\_diesel\\\\_stmt\\\\_%'",
    )
    .get_result::<Names>(conn)
    .unwrap()
    .v
}

fn shared_pool(db: &TestDb) -> SharedPool {
    SharedPool::builder(db.url())
        .max_size(1)
        .connection_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn a_shared_pool_reads_a_per_tenant_enum_on_every_change_of_tenant() {
    let db = db(true);
    let pool = shared_pool(&db);
    for round in 0..4 {
        for (t, want) in WANT {
            let mut conn = pool.get_for(&tenant(t)).unwrap();
            assert_eq!(read_moods(&mut conn).unwrap(), want, "round {round}, {t}");
            // The statements prepared for the last tenant are gone from the
            // server too: one, this tenant's, however many switches.
            assert_eq!(diesel_statements(&mut conn), 1, "round {round}, {t}");
        }
    }
}

#[test]
fn a_tenant_pool_keeps_its_statements() {
    let db = db(true);
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .build_for(tenant("b"))
        .unwrap();
    let mut names = Vec::new();
    for _ in 0..3 {
        let mut conn = pool.get().unwrap();
        assert_eq!(read_moods(&mut conn).unwrap(), "gleeful");
        names.push(statement_names(&mut conn));
    }
    assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
}

#[test]
fn a_transaction_scoped_pool_with_its_statement_cache_on_reads_a_per_tenant_enum() {
    let db = db(true);
    let pool = TransactionScopedPool::builder(db.url())
        .max_size(1)
        .prepared_statement_cache(true)
        .build()
        .unwrap();
    for round in 0..4 {
        for (t, want) in WANT {
            let (got, held) = pool
                .transaction_for(&tenant(t), |conn| {
                    Ok::<_, ConnectionError>((read_moods(conn)?, diesel_statements(conn)))
                })
                .unwrap();
            assert_eq!((got.as_str(), held), (want, 1), "round {round}, {t}");
        }
    }
}

/// Without per-tenant types nothing is forgotten: the statement prepared
/// for one tenant is the one run for the next (PostgreSQL re-plans it for
/// the new path by itself).
#[test]
fn without_per_tenant_types_statements_survive_a_change_of_tenant() {
    let db = db(false);
    let pool = shared_pool(&db);
    let mut names = Vec::new();
    for round in 0..3 {
        for (t, _) in WANT {
            let mut conn = pool.get_for(&tenant(t)).unwrap();
            moods::table
                .select(moods::note)
                .order(moods::id)
                .load::<String>(&mut *conn)
                .unwrap_or_else(|e| panic!("round {round}, {t}: {e}"));
            names.push(statement_names(&mut conn));
        }
    }
    assert!(
        names.iter().all(|n| *n == names[0] && !n.is_empty()),
        "{names:?}"
    );
}

/// `per_tenant_types(false)` is obeyed: the statement is kept, and
/// PostgreSQL refuses it for the other tenant's type (the setting is for
/// types no tenant path names).
#[test]
fn per_tenant_types_false_keeps_statements() {
    let db = db(true);
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .per_tenant_types(false)
        .build()
        .unwrap();
    read_moods(&mut pool.get_for(&tenant("a")).unwrap()).unwrap();
    let err = read_moods(&mut pool.get_for(&tenant("b")).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cached plan must not change result type"),
        "{err}"
    );
}
