//! A throwaway PgBouncer in transaction pooling mode in front of a
//! [`TempCluster`], for testing what happens behind a transaction-pooling
//! proxy (PgBouncer, RDS Proxy).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::{start_in_fresh_dir, Kind, RunAs, ServerProcess};
use crate::{Error, TempCluster};

/// The port number only names the socket file: PgBouncer listens on no TCP
/// port.
const SOCKET_PORT: u16 = 6432;

static PGBOUNCER: Kind = Kind {
    name: "pgbouncer",
    tag: "bouncer",
    port: SOCKET_PORT,
    start_timeout: Duration::from_secs(30),
    // Immediate shutdown (SIGINT would wait for clients).
    stop_signal: libc::SIGTERM,
};

/// Where Debian's `pgbouncer` package installs the binary.
const DEFAULT_BINARY: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer (`pool_mode = transaction`) listening on a unix socket in a
/// temporary directory of its own, forwarding every database name to the
/// same database of a [`TempCluster`]. Stopped and deleted when dropped, or
/// by a watchdog if the process dies first.
///
/// Run as root, it runs as the `postgres` user (PgBouncer refuses root).
/// The binary is `APPSCHEMA_PGBOUNCER` if set, else `/usr/sbin/pgbouncer`,
/// else `pgbouncer` on `PATH` (Debian: `apt-get install pgbouncer`).
///
/// ```no_run
/// let cluster = appschema_tempdb::TempCluster::start().unwrap();
/// let bouncer = appschema_tempdb::TempPgBouncer::start(&cluster).unwrap();
/// println!("connect through {}", bouncer.url_for("postgres"));
/// ```
#[derive(Debug)]
pub struct TempPgBouncer {
    pgbouncer: ServerProcess,
    version: (u32, u32),
    pool_size: u32,
}

impl TempPgBouncer {
    /// Starts PgBouncer with one server connection per database/user pair
    /// (`default_pool_size = 1`), so all its clients share one backend: what
    /// one client leaves behind in the session, the next one sees.
    pub fn start(cluster: &TempCluster) -> Result<TempPgBouncer, Error> {
        Self::start_with_pool_size(cluster, 1)
    }

    /// Starts PgBouncer with `pool_size` server connections per
    /// database/user pair.
    pub fn start_with_pool_size(
        cluster: &TempCluster,
        pool_size: u32,
    ) -> Result<TempPgBouncer, Error> {
        let binary = find_binary()?;
        let version = binary_version(&binary)?;
        let run_as = RunAs::detect()?;
        start_in_fresh_dir(&PGBOUNCER, |dir| {
            Self::start_in(dir, &binary, version, run_as, cluster, pool_size)
        })
    }

    fn start_in(
        dir: PathBuf,
        binary: &Path,
        version: (u32, u32),
        run_as: Option<RunAs>,
        cluster: &TempCluster,
        pool_size: u32,
    ) -> Result<TempPgBouncer, Error> {
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text)
                .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
            if let Some(user) = run_as {
                user.chown(&path)?;
            }
            Ok::<_, Error>(path)
        };
        // Protocol-level prepared statements arrived in 1.21; older versions
        // reject the setting.
        let prepared = if version >= (1, 21) {
            "max_prepared_statements = 200\n"
        } else {
            ""
        };
        write("userlist.txt", "\"postgres\" \"\"\n")?;
        let log_path = write("pgbouncer.log", "")?;
        let config = format!(
            "[databases]\n\
             * = host={socket} port={port} user=postgres\n\
             \n\
             [pgbouncer]\n\
             listen_addr =\n\
             listen_port = {SOCKET_PORT}\n\
             unix_socket_dir = {dir}\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             min_pool_size = 0\n\
             reserve_pool_size = 0\n\
             max_client_conn = 500\n\
             server_reset_query =\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {dir}/pgbouncer.log\n\
             {prepared}",
            socket = cluster.socket_dir().display(),
            port = cluster.port(),
            dir = dir.display(),
        );
        let config_path = write("pgbouncer.ini", &config)?;
        if let Some(user) = run_as {
            user.chown(&dir)?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::new(format!("cannot chmod {}: {e}", dir.display())))?;

        let mut cmd = Command::new(binary);
        cmd.arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pgbouncer = ServerProcess::start(&PGBOUNCER, cmd, run_as, dir, log_path)?;
        Ok(TempPgBouncer {
            pgbouncer,
            version,
            pool_size,
        })
    }

    /// A URL for database `dbname` through PgBouncer, as user `postgres`.
    pub fn url_for(&self, dbname: &str) -> String {
        self.pgbouncer.url_for(dbname)
    }

    /// PgBouncer's version, `(major, minor)`.
    pub fn version(&self) -> (u32, u32) {
        self.version
    }

    /// Whether this PgBouncer tracks protocol-level prepared statements
    /// (1.21+, configured here with `max_prepared_statements`). Without it,
    /// clients must not use named prepared statements across transactions.
    pub fn supports_prepared_statements(&self) -> bool {
        self.version >= (1, 21)
    }

    /// Server connections per database/user pair.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        self.pgbouncer.log()
    }

    /// The directory holding the configuration, the socket and the log.
    pub fn dir(&self) -> &Path {
        self.pgbouncer.dir()
    }
}

fn find_binary() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os("APPSCHEMA_PGBOUNCER") {
        return Ok(path.into());
    }
    let mut candidates = vec![PathBuf::from(DEFAULT_BINARY)];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("pgbouncer")));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::new(
            "no pgbouncer binary found (looked at /usr/sbin/pgbouncer and on PATH): install it \
             (Debian/Ubuntu: `apt-get install pgbouncer`) or set APPSCHEMA_PGBOUNCER",
        )
    })
}

/// Parses `PgBouncer 1.18.0` from `pgbouncer --version`.
fn binary_version(binary: &Path) -> Result<(u32, u32), Error> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| Error::new(format!("cannot run {} --version: {e}", binary.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).ok_or_else(|| {
        Error::new(format!(
            "cannot read the version from `{} --version`: {text:?}",
            binary.display()
        ))
    })
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let word = text
        .split_whitespace()
        .skip_while(|w| *w != "PgBouncer")
        .nth(1)?;
    let mut parts = word.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_line_is_parsed() {
        assert_eq!(
            super::parse_version("PgBouncer 1.18.0\nlibevent 2.1.12-stable\n"),
            Some((1, 18))
        );
        assert_eq!(super::parse_version("PgBouncer 1.23.1"), Some((1, 23)));
        assert_eq!(super::parse_version("nonsense"), None);
    }
}
