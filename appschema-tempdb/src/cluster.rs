//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, a
//! `postgres` listening only on a unix socket inside it, and a watchdog that
//! removes both when the owning process goes away, however it goes.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection};

use crate::bins::PgBins;
use crate::Error;

/// The port number only names the socket file: the server listens on no TCP
/// port, so clusters started by parallel test processes never collide.
const SOCKET_PORT: u16 = 5432;

/// How long `start` waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The watchdog: a `sh` that blocks reading its stdin, whose write end only
/// the owning process holds. When that process exits — normally, by a panic,
/// or by `SIGKILL` — the pipe closes, `read` returns and the cluster is shut
/// down and deleted. Terminal signals are ignored so that a `^C` on
/// `cargo test` still reaches the clean-up.
pub(crate) const WATCHDOG: &str = r#"
trap '' INT TERM HUP
read _ignored
kill -INT "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i+1)); done
kill -KILL "$1" 2>/dev/null
rm -rf "$2"
"#;

/// Who runs `initdb` and `postgres`: both refuse to run as root, so when the
/// current user is root they run as the unprivileged `postgres` user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl RunAs {
    pub(crate) fn detect() -> Result<Option<RunAs>, Error> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let name = c"postgres";
        // SAFETY: `name` is a valid NUL-terminated string; the returned
        // record is copied out before any other getpw* call.
        let pw = unsafe { libc::getpwnam(name.as_ptr()) };
        if pw.is_null() {
            return Err(Error::new(
                "running as root, but initdb and postgres refuse to run as root and there is no \
                 `postgres` user to run them as: create one (`useradd --system postgres`, or \
                 `apt-get install postgresql`), or run as an ordinary user",
            ));
        }
        // SAFETY: `pw` is non-null and points at a valid passwd record.
        let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
        Ok(Some(RunAs { uid, gid }))
    }

    pub(crate) fn apply(self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }
}

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
    dir: PathBuf,
    bins: PgBins,
    postgres: Child,
    watchdog: Option<(Child, ChildStdin)>,
}

impl TempCluster {
    /// Runs `initdb` and starts `postgres`, waiting until it accepts
    /// connections.
    ///
    /// The binaries are looked up on `PATH`, then under
    /// `/usr/lib/postgresql/*/bin` (highest version first).
    pub fn start() -> Result<TempCluster, Error> {
        let bins = PgBins::find()?;
        let run_as = RunAs::detect()?;
        // /tmp rather than $TMPDIR: the unix socket path must stay under
        // ~100 bytes, and the `postgres` user must be able to reach it.
        let dir = tempfile::Builder::new()
            .prefix("appschema-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| Error::new(format!("cannot create a directory under /tmp: {e}")))?
            .keep();
        match Self::start_in(dir.clone(), bins, run_as) {
            Ok(cluster) => Ok(cluster),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn start_in(dir: PathBuf, bins: PgBins, run_as: Option<RunAs>) -> Result<TempCluster, Error> {
        if let Some(user) = run_as {
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid))
                .map_err(|e| Error::new(format!("cannot chown {}: {e}", dir.display())))?;
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
            .args(["-p", &SOCKET_PORT.to_string()])
            // Throwaway data: trade durability for speed.
            .args(["-c", "listen_addresses="])
            .args(["-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "max_connections=400"])
            .args(["-c", "max_locks_per_transaction=256"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // Own process group: a ^C in the terminal is for the watchdog to
            // handle, not for the server to half-handle.
            .process_group(0);
        if let Some(user) = run_as {
            user.apply(&mut cmd);
        }
        let postgres = cmd.spawn().map_err(|e| {
            Error::new(format!(
                "cannot run {}: {e}",
                bins.path("postgres").display()
            ))
        })?;

        let mut cluster = TempCluster {
            dir,
            bins,
            postgres,
            watchdog: None,
        };
        cluster.watchdog = Some(cluster.spawn_watchdog()?);
        cluster.wait_until_ready()?;
        Ok(cluster)
    }

    fn spawn_watchdog(&self) -> Result<(Child, ChildStdin), Error> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("appschema-pg-watchdog")
            .arg(self.postgres.id().to_string())
            .arg(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::new(format!("cannot start the clean-up watchdog (sh): {e}")))?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok((child, stdin))
    }

    fn wait_until_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.postgres.try_wait() {
                return Err(Error::new(format!(
                    "postgres exited during start-up ({status}); its log:\n{}",
                    self.log()
                )));
            }
            match PgConnection::establish(&self.url()) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(Error::new(format!(
                        "postgres did not accept connections within {START_TIMEOUT:?} ({e}); its log:\n{}",
                        self.log()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The server's log so far (for error messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// A connection URL for the `postgres` database as the superuser `postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// A connection URL for database `dbname` as the superuser `postgres`.
    pub fn url_for(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@/{dbname}?host={}&port={SOCKET_PORT}",
            self.dir.display()
        )
    }

    /// The directory holding the data directory, the socket and the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding the socket (for tools such as PgBouncer).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The port number naming the server's socket file.
    pub fn port(&self) -> u16 {
        SOCKET_PORT
    }

    /// The process id of the postmaster.
    pub fn pid(&self) -> u32 {
        self.postgres.id()
    }

    /// Where the server's binaries (`pg_dump`, …) were found.
    pub fn bin_dir(&self) -> &Path {
        self.bins.dir()
    }

    fn shutdown(&mut self) {
        // SAFETY: sending a signal to our own child, not yet reaped.
        unsafe { libc::kill(self.postgres.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.postgres.try_wait() {
            if Instant::now() > deadline {
                let _ = self.postgres.kill();
                let _ = self.postgres.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        // Stop the watchdog first: once the postmaster is reaped its pid may
        // be reused, and the watchdog must never signal a stranger.
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = stdin.flush();
        }
        self.shutdown();
    }
}
