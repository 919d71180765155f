//! Throwaway PostgreSQL for appschema's tests, examples and benchmarks.
//!
//! appschema is tested against a real server, never a mock. This crate gives
//! every test, example and benchmark one with no set-up:
//!
//! - if `DATABASE_URL` is set, that server is used;
//! - otherwise a throwaway cluster is started ([`TempCluster`]): `initdb` into
//!   a directory under `/tmp`, `postgres` listening on a unix socket inside
//!   it, both deleted when the process ends (normally, by a panic, or killed).
//!
//! - with `APPSCHEMA_TEST_CITUS=1` (and no `DATABASE_URL`), a throwaway
//!   Citus cluster is started instead ([`TempCitus`]: a coordinator and two
//!   workers), and every test database is a Citus database on all three:
//!   the same tests then run against the coordinator.
//!
//! - for development, [`DevCluster`] keeps a server's data in the project
//!   and outlives the process that starts it (`appschema-cli dev start`).
//!
//! One server is shared per process ([`server`]), and each test takes its own
//! database on it ([`TestDb`]), so tests run in parallel without seeing each
//! other's tables.
//!
//! ```no_run
//! use diesel::prelude::*;
//! let db = appschema_tempdb::TestDb::new();
//! let mut conn = PgConnection::establish(db.url()).unwrap();
//! diesel::sql_query("CREATE TABLE t (id int)").execute(&mut conn).unwrap();
//! // the database is dropped with `db`
//! ```
//!
//! Why not the `pgtemp` crate: it starts the server through `sudo` when run as
//! root (CI runs as root and has no `sudo`), only looks for the binaries on
//! `PATH` (Debian keeps them in `/usr/lib/postgresql/<v>/bin`), leaves the
//! cluster behind when the process is killed, and pulls in tokio and clap.
#![warn(missing_docs)]

mod bins;
mod citus;
mod cluster;
mod dev;
mod pgbouncer;
mod process;
mod testdb;
mod tls;

pub use citus::{citus_for_tests, CitusTestDb, TempCitus};
pub use cluster::TempCluster;
pub use dev::{DevCluster, DevStarted, DevStatus};
pub use pgbouncer::TempPgBouncer;
pub use testdb::{server, Server, TestDb};
pub use tls::TempTlsCluster;

/// Why a throwaway server or database could not be provided.
#[derive(Debug, Clone)]
pub struct Error {
    message: String,
}

impl Error {
    pub(crate) fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
