//! Shared set-up for the connection tests: tenant schemas `t0`, `t1`, … each
//! with an `items` table whose row 1 is a marker naming its schema, and a
//! `public.items` marked `public`, so a connection on the wrong path returns
//! the wrong marker instead of an error.

use appschema_core::{registry, PublicName, SchemaName};
use appschema_tempdb::{server, TempCluster, TempPgBouncer, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Integer, Nullable, Text};

/// The schema of tenant `i`: `t{i}`.
pub fn tenant(i: usize) -> SchemaName {
    SchemaName::new(format!("t{i}")).unwrap()
}

/// The public name of tenant `i`: `t{i}.example.com`.
pub fn public_name(i: usize) -> String {
    format!("t{i}.example.com")
}

/// Creates `n` tenants (registered) on `conn`'s database.
pub fn create_tenants(conn: &mut PgConnection, n: usize) {
    registry::install(conn).unwrap();
    // On a Citus coordinator (APPSCHEMA_TEST_CITUS=1), each tenant schema is
    // a distributed schema on a worker, as appschema creates them there.
    let citus = appschema_core::citus::is_citus(conn).unwrap();
    let mut sql = String::from(if citus {
        "SET citus.enable_schema_based_sharding = on;"
    } else {
        ""
    });
    sql.push_str(
        "CREATE TABLE public.items (id int8 PRIMARY KEY, marker text NOT NULL);
         INSERT INTO public.items VALUES (1, 'public');",
    );
    for i in 0..n {
        let t = tenant(i);
        sql.push_str(&format!(
            "CREATE SCHEMA {q};
             CREATE TABLE {q}.items (id int8 PRIMARY KEY, marker text NOT NULL);
             INSERT INTO {q}.items SELECT g, CASE WHEN g = 1 THEN '{t}' ELSE 'row' END
               FROM generate_series(1, 100) g;",
            q = t.quoted()
        ));
    }
    if citus {
        sql.push_str("RESET citus.enable_schema_based_sharding;");
    }
    conn.batch_execute(&sql).unwrap();
    for i in 0..n {
        registry::insert(conn, &PublicName::new(&public_name(i)).unwrap(), &tenant(i)).unwrap();
    }
}

/// A fresh database of its own with `n` tenants ([`create_tenants`]).
pub fn db_with_tenants(n: usize) -> TestDb {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), n);
    db
}

/// Where a connection is: its current schema and the marker its `items`
/// resolves to.
#[derive(QueryableByName, Debug, PartialEq, Eq)]
pub struct WhoAmI {
    /// `current_schema()`.
    #[diesel(sql_type = Nullable<Text>)]
    pub schema: Option<String>,
    /// Row 1 of `items` on the connection's path.
    #[diesel(sql_type = Text)]
    pub marker: String,
}

/// Asserts `me` (a [`WhoAmI`] read on a connection or in a unit for
/// `expected`) is on `expected`'s path, naming the leak if not.
pub fn assert_is(me: &WhoAmI, expected: &str) {
    assert_eq!(
        (me.schema.as_deref(), me.marker.as_str()),
        (Some(expected), expected),
        "LEAK: a connection for `{expected}` is on another schema"
    );
}

/// The connection's current schema and the marker its `items` resolves to.
/// Two statements: on Citus a statement reading a tenant's `items` is
/// routed to the worker holding it, where `current_schema()` would be the
/// worker's, not this session's.
pub fn whoami(conn: &mut PgConnection) -> QueryResult<WhoAmI> {
    #[derive(QueryableByName)]
    struct Schema {
        #[diesel(sql_type = Nullable<Text>)]
        schema: Option<String>,
    }
    #[derive(QueryableByName)]
    struct Marker {
        #[diesel(sql_type = Text)]
        marker: String,
    }
    let schema =
        diesel::sql_query("SELECT current_schema() AS schema").get_result::<Schema>(conn)?;
    let marker =
        diesel::sql_query("SELECT marker FROM items WHERE id = 1").get_result::<Marker>(conn)?;
    Ok(WhoAmI {
        schema: schema.schema,
        marker: marker.marker,
    })
}

/// Asserts `conn` is on `expected`'s path, naming the leak if not.
pub fn assert_on(conn: &mut PgConnection, expected: &str) {
    assert_is(&whoami(conn).unwrap(), expected);
}

/// A row of `SELECT pg_backend_pid() AS pid`.
#[derive(QueryableByName, Debug)]
pub struct Pid {
    /// The backend's process id.
    #[diesel(sql_type = Integer)]
    pub pid: i32,
}

/// The process id of `conn`'s backend.
pub fn backend_pid(conn: &mut PgConnection) -> i32 {
    diesel::sql_query("SELECT pg_backend_pid() AS pid")
        .get_result::<Pid>(conn)
        .unwrap()
        .pid
}

/// A database with `n` tenants behind a PgBouncer (one server connection,
/// so every client shares one backend). Falls back to a cluster of its own
/// when `DATABASE_URL` names an external server.
#[derive(Debug)]
pub struct Bounced {
    /// The PgBouncer in front of the database.
    pub bouncer: TempPgBouncer,
    db: String,
    _own: Option<(TempCluster, ())>,
    _testdb: Option<TestDb>,
}

/// A [`Bounced`] database with `n` tenants ([`create_tenants`]).
pub fn bounced(n: usize) -> Bounced {
    match server().temp_cluster() {
        Some(cluster) => {
            let testdb = TestDb::new();
            create_tenants(&mut testdb.conn(), n);
            let bouncer = TempPgBouncer::start(cluster).unwrap();
            Bounced {
                bouncer,
                db: testdb.name().to_string(),
                _own: None,
                _testdb: Some(testdb),
            }
        }
        None => {
            let cluster = TempCluster::start().unwrap();
            create_tenants(&mut PgConnection::establish(&cluster.url()).unwrap(), n);
            let bouncer = TempPgBouncer::start(&cluster).unwrap();
            Bounced {
                bouncer,
                db: "postgres".to_string(),
                _own: Some((cluster, ())),
                _testdb: None,
            }
        }
    }
}

impl Bounced {
    /// The database's URL through PgBouncer.
    pub fn url(&self) -> String {
        self.bouncer.url_for(&self.db)
    }

    /// The same database, directly (not through PgBouncer).
    pub fn direct_url(&self) -> String {
        match (&self._testdb, &self._own) {
            (Some(db), _) => db.url().to_string(),
            (None, Some((cluster, ()))) => cluster.url(),
            (None, None) => unreachable!("a Bounced holds its database"),
        }
    }
}
