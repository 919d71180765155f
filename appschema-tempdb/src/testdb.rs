//! One server per process, one database per test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use diesel::{Connection, PgConnection, RunQueryDsl};

use crate::{Error, TempCitus, TempCluster};

/// The server a process's tests, examples or benchmarks talk to.
#[derive(Debug)]
pub enum Server {
    /// The server named by `DATABASE_URL`.
    External {
        /// The URL as given.
        url: String,
    },
    /// A throwaway cluster started for this process.
    Temp(TempCluster),
    /// A throwaway Citus cluster started for this process
    /// (`APPSCHEMA_TEST_CITUS=1`); URLs are the coordinator's.
    Citus(TempCitus),
}

impl Server {
    /// `DATABASE_URL` if set, else a freshly started [`TempCitus`] when
    /// `APPSCHEMA_TEST_CITUS` is set (to anything but `0` or nothing), else
    /// a freshly started [`TempCluster`].
    pub fn from_env_or_start() -> Result<Server, Error> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Ok(Server::External { url }),
            _ if citus_requested() => TempCitus::start().map(Server::Citus),
            _ => TempCluster::start().map(Server::Temp),
        }
    }

    /// The URL of the server's main database.
    pub fn url(&self) -> String {
        match self {
            Server::External { url } => url.clone(),
            Server::Temp(cluster) => cluster.url(),
            Server::Citus(citus) => citus.coordinator().url(),
        }
    }

    /// The URL of database `dbname` on this server.
    pub fn url_for(&self, dbname: &str) -> String {
        match self {
            Server::External { url } => with_database(url, dbname),
            Server::Temp(cluster) => cluster.url_for(dbname),
            Server::Citus(citus) => citus.coordinator().url_for(dbname),
        }
    }

    /// The throwaway cluster, if this server is one (for Citus: the
    /// coordinator).
    pub fn temp_cluster(&self) -> Option<&TempCluster> {
        match self {
            Server::External { .. } => None,
            Server::Temp(cluster) => Some(cluster),
            Server::Citus(citus) => Some(citus.coordinator()),
        }
    }

    /// The throwaway Citus cluster, if this server is one.
    pub fn citus(&self) -> Option<&TempCitus> {
        match self {
            Server::Citus(citus) => Some(citus),
            _ => None,
        }
    }
}

/// Whether `APPSCHEMA_TEST_CITUS` asks for a Citus cluster.
fn citus_requested() -> bool {
    std::env::var("APPSCHEMA_TEST_CITUS").is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0")
}

/// The process-wide server, started on first use and never stopped by this
/// process: the cluster's watchdog deletes it when the process exits.
///
/// Panics with the reason (what to install, or the server's log) when no
/// server can be had: this is for tests, examples and benchmarks.
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        Server::from_env_or_start()
            .unwrap_or_else(|e| panic!("cannot get a PostgreSQL server: {e}"))
    })
}

/// A database of its own for one test, dropped (with its connections) when
/// this value is dropped.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates a fresh, empty database on the process-wide [`server`].
    pub fn new() -> TestDb {
        Self::try_new().unwrap_or_else(|e| panic!("cannot create a test database: {e}"))
    }

    /// Like [`TestDb::new`], returning the error instead of panicking.
    pub fn try_new() -> Result<TestDb, Error> {
        Self::create(None)
    }

    /// Creates a database on the process-wide [`server`] as a copy of
    /// database `template` (`CREATE DATABASE .. TEMPLATE ..`): schemas,
    /// tables and rows included, at the cost of a file copy. Nobody may be
    /// connected to `template` meanwhile (PostgreSQL's rule).
    pub fn try_from_template(template: &str) -> Result<TestDb, Error> {
        Self::create(Some(template))
    }

    fn create(template: Option<&str>) -> Result<TestDb, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let server = server();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "appschema_test_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        if let Some(citus) = server.citus() {
            let url = citus.create_database_from(&name, template)?;
            return Ok(TestDb { name, url });
        }
        let mut admin = PgConnection::establish(&server.url())
            .map_err(|e| Error::new(format!("cannot connect to {}: {e}", server.url())))?;
        let copy = match template {
            Some(template) => format!(" TEMPLATE {}", quote_ident(template)),
            None => String::new(),
        };
        diesel::sql_query(format!("CREATE DATABASE \"{name}\"{copy}"))
            .execute(&mut admin)
            .map_err(|e| Error::new(format!("cannot create database {name}: {e}")))?;
        let url = server.url_for(&name);
        Ok(TestDb { name, url })
    }

    /// The database's connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A new connection to the database.
    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.url)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url))
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(citus) = server().citus() {
            let _ = citus.drop_database(&self.name);
            return;
        }
        if let Ok(mut admin) = PgConnection::establish(&server().url()) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin);
        }
    }
}

/// `ident` as a quoted SQL identifier.
pub(crate) fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `url` with its database name replaced by `dbname`.
fn with_database(url: &str, dbname: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // A libpq keyword/value string: a later `dbname=` wins.
        return format!("{url} dbname={dbname}");
    };
    let (head, rest) = url.split_at(scheme_end);
    let (authority_and_path, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority_and_path.find('/') {
        Some(i) => &authority_and_path[..i],
        None => authority_and_path,
    };
    format!("{head}{authority}/{dbname}{query}")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database_name() {
        assert_eq!(
            with_database("postgres://u:p@h:5/app?sslmode=disable", "t1"),
            "postgres://u:p@h:5/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(
            with_database("postgresql://u@/app?host=/tmp/x&port=5432", "t1"),
            "postgresql://u@/t1?host=/tmp/x&port=5432"
        );
        assert_eq!(with_database("host=x", "t1"), "host=x dbname=t1");
    }
}
