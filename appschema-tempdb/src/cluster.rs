//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, a
//! `postgres` listening only on a unix socket inside it, and a watchdog that
//! removes both when the owning process goes away, however it goes.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::bins::PgBins;
use crate::process::{start_in_fresh_dir, Kind, RunAs, ServerProcess};
use crate::Error;

/// The port number only names the socket file: the server listens on no TCP
/// port, so clusters started by parallel test processes never collide.
const SOCKET_PORT: u16 = 5432;

pub(crate) static POSTGRES: Kind = Kind {
    name: "postgres",
    tag: "pg",
    port: SOCKET_PORT,
    start_timeout: Duration::from_secs(60),
    // Fast shutdown: roll back open transactions, disconnect clients.
    stop_signal: libc::SIGINT,
};

/// A PostgreSQL cluster that exists for as long as this value does.
///
/// Dropping it stops the server and deletes its directory. Should the process
/// die without dropping it (a `static`, a panic with `panic = "abort"`, a
/// `SIGKILL`), a watchdog process notices and does the same.
///
/// ```no_run
/// let cluster = appschema_tempdb::TempCluster::start().unwrap();
/// println!("connect to {}", cluster.url());
/// drop(cluster); // server stopped, directory gone
/// ```
#[derive(Debug)]
pub struct TempCluster {
    postgres: ServerProcess,
    bins: PgBins,
}

impl TempCluster {
    /// Runs `initdb` and starts `postgres`, waiting until it accepts
    /// connections.
    ///
    /// The binaries are looked up on `PATH`, then under
    /// `/usr/lib/postgresql/*/bin` (highest version first).
    pub fn start() -> Result<TempCluster, Error> {
        Self::start_with(&[])
    }

    /// Like [`TempCluster::start`], with server settings added to the
    /// command line (`-c name=value`). A value may hold `{dir}`, replaced by
    /// the cluster's directory (which is also its socket directory): Citus's
    /// `citus.local_hostname` names the node itself that way.
    pub fn start_with(settings: &[(&str, &str)]) -> Result<TempCluster, Error> {
        Self::start_kind(&POSTGRES, settings, |_, _| Ok(()))
    }

    /// Starts a cluster of `kind` (its port: a TCP port too when the
    /// settings make it listen on TCP), after `prepare` has put files in
    /// the cluster's directory (given with the user the server runs as).
    pub(crate) fn start_kind(
        kind: &'static Kind,
        settings: &[(&str, &str)],
        prepare: impl FnOnce(&Path, Option<RunAs>) -> Result<(), Error>,
    ) -> Result<TempCluster, Error> {
        let bins = PgBins::find()?;
        let run_as = RunAs::detect()?;
        start_in_fresh_dir(kind, |dir| {
            prepare(&dir, run_as)?;
            Self::start_in(kind, dir, bins, run_as, settings)
        })
    }

    fn start_in(
        kind: &'static Kind,
        dir: PathBuf,
        bins: PgBins,
        run_as: Option<RunAs>,
        settings: &[(&str, &str)],
    ) -> Result<TempCluster, Error> {
        if let Some(user) = run_as {
            user.chown(&dir)?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::new(format!("cannot chmod {}: {e}", dir.display())))?;

        let data = dir.join("data");
        let mut initdb = Command::new(bins.path("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null());
        if let Some(user) = run_as {
            user.apply(&mut initdb);
        }
        let out = initdb.output().map_err(|e| {
            Error::new(format!("cannot run {}: {e}", bins.path("initdb").display()))
        })?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "initdb failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }

        let log_path = dir.join("postgres.log");
        let log = File::create(&log_path)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::new(format!("cannot duplicate log handle: {e}")))?;
        let mut cmd = Command::new(bins.path("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-p", &kind.port.to_string()])
            // Throwaway data: trade durability for speed.
            .args(["-c", "listen_addresses="])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400"])
            .args(["-c", "max_locks_per_transaction=256"]);
        for (name, value) in settings {
            let value = value.replace("{dir}", &dir.display().to_string());
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let postgres = ServerProcess::start(kind, cmd, run_as, dir, log_path)?;
        Ok(TempCluster { postgres, bins })
    }

    /// The server's log so far (for error messages).
    pub fn log(&self) -> String {
        self.postgres.log()
    }

    /// A connection URL for the `postgres` database as the superuser `postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A connection URL for database `dbname` as the superuser `postgres`.
    pub fn url_for(&self, dbname: &str) -> String {
        self.postgres.url_for(dbname)
    }

    /// The directory holding the data directory, the socket and the log.
    pub fn dir(&self) -> &Path {
        self.postgres.dir()
    }

    /// The directory holding the socket (for tools such as PgBouncer).
    pub fn socket_dir(&self) -> &Path {
        self.postgres.dir()
    }

    /// The port number naming the server's socket file (and its TCP port,
    /// for a cluster that listens on TCP).
    pub fn port(&self) -> u16 {
        self.postgres.port()
    }

    /// The process id of the postmaster.
    pub fn pid(&self) -> u32 {
        self.postgres.pid()
    }

    /// Where the server's binaries (`pg_dump`, …) were found.
    pub fn bin_dir(&self) -> &Path {
        self.bins.dir()
    }
}
