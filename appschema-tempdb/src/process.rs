//! What running a throwaway server takes, whichever server it is: a
//! directory of its own, a watchdog that removes the server and the
//! directory when the owning process goes away, however it goes, a wait
//! until the server accepts connections, and a prompt stop.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection};

use crate::Error;

/// The watchdog: a `sh` that blocks reading its stdin, whose write end only
/// the owning process holds. When that process exits — normally, by a panic,
/// or by `SIGKILL` — the pipe closes, `read` returns and the server is shut
/// down and its directory deleted. Terminal signals are ignored so that a
/// `^C` on `cargo test` still reaches the clean-up.
const WATCHDOG: &str = r#"
trap '' INT TERM HUP
read _ignored
kill -INT "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 200 ]; do sleep 0.05; i=$((i+1)); done
kill -KILL "$1" 2>/dev/null
rm -rf "$2"
"#;

/// Who runs `initdb`, `postgres` and `pgbouncer`: all refuse to run as root,
/// so when the current user is root they run as the unprivileged `postgres`
/// user.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunAs {
    uid: u32,
    gid: u32,
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

    pub(crate) fn uid(self) -> u32 {
        self.uid
    }

    pub(crate) fn gid(self) -> u32 {
        self.gid
    }

    pub(crate) fn apply(self, cmd: &mut Command) {
        cmd.uid(self.uid).gid(self.gid);
    }

    pub(crate) fn chown(self, path: &Path) -> Result<(), Error> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .map_err(|e| Error::new(format!("cannot chown {}: {e}", path.display())))
    }
}

/// What sets one server apart from the other, as far as running it goes.
#[derive(Debug)]
pub(crate) struct Kind {
    /// How error messages name it.
    pub(crate) name: &'static str,
    /// Its directory is `/tmp/appschema-<tag>-…` and its watchdog's `$0`
    /// `appschema-<tag>-watchdog`, so that leftovers can be told apart in
    /// `/tmp` and in `ps`.
    pub(crate) tag: &'static str,
    /// The port number naming its socket file in its directory.
    pub(crate) port: u16,
    /// How long starting it waits for it to accept connections.
    pub(crate) start_timeout: Duration,
    /// The signal that stops it without waiting for its clients to go.
    pub(crate) stop_signal: libc::c_int,
}

/// Creates a directory for a server of `kind` and starts the server in it
/// with `start`, removing the directory again if that fails.
pub(crate) fn start_in_fresh_dir<T>(
    kind: &Kind,
    start: impl FnOnce(PathBuf) -> Result<T, Error>,
) -> Result<T, Error> {
    // /tmp rather than $TMPDIR: the unix socket path must stay under
    // ~100 bytes, and the `postgres` user must be able to reach it.
    let dir = tempfile::Builder::new()
        .prefix(&format!("appschema-{}-", kind.tag))
        .tempdir_in("/tmp")
        .map_err(|e| Error::new(format!("cannot create a directory under /tmp: {e}")))?
        .keep();
    start(dir.clone()).inspect_err(|_| {
        let _ = fs::remove_dir_all(&dir);
    })
}

/// A running server, listening on a unix socket in `dir`, logging to `log`.
///
/// Dropping it stops the server and deletes `dir`; should the owning process
/// die without dropping it, the watchdog does the same.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    kind: &'static Kind,
    dir: PathBuf,
    log: PathBuf,
    process: Child,
    watchdog: Option<(Child, ChildStdin)>,
}

impl ServerProcess {
    /// Spawns `cmd`, as `run_as` if set, and waits until it accepts
    /// connections.
    pub(crate) fn start(
        kind: &'static Kind,
        mut cmd: Command,
        run_as: Option<RunAs>,
        dir: PathBuf,
        log: PathBuf,
    ) -> Result<ServerProcess, Error> {
        // Own process group: a ^C in the terminal is for the watchdog to
        // handle, not for the server to half-handle.
        cmd.process_group(0);
        if let Some(user) = run_as {
            user.apply(&mut cmd);
        }
        let process = cmd.spawn().map_err(|e| {
            Error::new(format!(
                "cannot run {}: {e}",
                Path::new(cmd.get_program()).display()
            ))
        })?;
        let mut server = ServerProcess {
            kind,
            dir,
            log,
            process,
            watchdog: None,
        };
        server.watchdog = Some(server.spawn_watchdog()?);
        server.wait_until_accepting_connections()?;
        Ok(server)
    }

    /// Stops the server the way its kind's stop signal does (for
    /// PostgreSQL a fast shutdown: open transactions rolled back, clients
    /// disconnected), then starts `cmd` (the same server, on the same
    /// directory and socket) and waits until it accepts connections: what
    /// `pg_ctl restart -m fast` does to a server's clients.
    pub(crate) fn restart(&mut self, mut cmd: Command, run_as: Option<RunAs>) -> Result<(), Error> {
        self.stop_watchdog();
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.process.id() as libc::pid_t, self.kind.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Ok(None) = self.process.try_wait() {
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "{} did not stop within 30 s for a restart; its log:\n{}",
                    self.kind.name,
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cmd.process_group(0);
        if let Some(user) = run_as {
            user.apply(&mut cmd);
        }
        self.process = cmd.spawn().map_err(|e| {
            Error::new(format!(
                "cannot run {}: {e}",
                Path::new(cmd.get_program()).display()
            ))
        })?;
        self.watchdog = Some(self.spawn_watchdog()?);
        self.wait_until_accepting_connections()
    }

    /// Stops the watchdog without letting it act: once the server is reaped
    /// its pid may be reused, and the watchdog must never signal a stranger.
    fn stop_watchdog(&mut self) {
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = stdin.flush();
        }
    }

    fn spawn_watchdog(&self) -> Result<(Child, ChildStdin), Error> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(format!("appschema-{}-watchdog", self.kind.tag))
            .arg(self.process.id().to_string())
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

    fn wait_until_accepting_connections(&mut self) -> Result<(), Error> {
        let Kind {
            name,
            start_timeout,
            ..
        } = *self.kind;
        let deadline = Instant::now() + start_timeout;
        loop {
            if let Ok(Some(status)) = self.process.try_wait() {
                return Err(Error::new(format!(
                    "{name} exited during start-up ({status}); its log:\n{}",
                    self.log()
                )));
            }
            match PgConnection::establish(&self.url_for("postgres")) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(Error::new(format!(
                        "{name} did not accept connections within {start_timeout:?} ({e}); its log:\n{}",
                        self.log()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The server's log so far (for error messages).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A connection URL for database `dbname` as user `postgres`.
    pub(crate) fn url_for(&self, dbname: &str) -> String {
        format!(
            "postgres://postgres@/{dbname}?host={}&port={}",
            self.dir.display(),
            self.kind.port
        )
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn port(&self) -> u16 {
        self.kind.port
    }

    pub(crate) fn pid(&self) -> u32 {
        self.process.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop_watchdog();
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(self.process.id() as libc::pid_t, self.kind.stop_signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(None) = self.process.try_wait() {
            if Instant::now() > deadline {
                let _ = self.process.kill();
                let _ = self.process.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
