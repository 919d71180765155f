//! A persistent local development server: a PostgreSQL cluster whose data
//! is kept in the project (`.appschema/pgdata`), started and stopped with
//! `pg_ctl`, listening on a loopback TCP port chosen once and remembered.
//!
//! Unlike [`TempCluster`](crate::TempCluster) it outlives the process that
//! starts it and keeps its data across restarts, with PostgreSQL's normal
//! durability (no `fsync=off`).

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::bins::PgBins;
use crate::process::RunAs;
use crate::Error;

/// A development server kept in a directory of the project.
///
/// Layout of the directory: `pgdata/` (the data directory, owned by the
/// `postgres` user when run as root: PostgreSQL refuses to run as root),
/// `postgres.log`, `url` (the connection URL with its generated password,
/// readable by its owner only) and a `.gitignore` keeping it all out of the
/// repository.
///
/// ```no_run
/// let dev = appschema_tempdb::DevCluster::new(".appschema");
/// let url = dev.start().unwrap().url; // initdb on first use, else just start
/// println!("export DATABASE_URL={url}");
/// dev.stop().unwrap(); // data kept for the next start
/// ```
#[derive(Debug, Clone)]
pub struct DevCluster {
    dir: PathBuf,
}

/// What [`DevCluster::start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevStarted {
    /// The connection URL (database `postgres`, user `postgres`).
    pub url: String,
    /// `true` when the data directory was created by this start.
    pub created: bool,
    /// `true` when the server was running already (nothing was done).
    pub already_running: bool,
}

/// What [`DevCluster::status`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevStatus {
    /// No data directory yet: the first [`DevCluster::start`] creates it.
    NotCreated,
    /// Created and stopped.
    Stopped,
    /// Running as this postmaster process id.
    Running {
        /// The postmaster's process id.
        pid: u32,
    },
}

impl DevCluster {
    /// The development server kept in `dir` (conventionally `.appschema`
    /// in the project's root). Nothing is touched until a method is called.
    /// A relative `dir` is taken from the current directory now.
    pub fn new(dir: impl Into<PathBuf>) -> DevCluster {
        let dir = dir.into();
        DevCluster {
            dir: std::path::absolute(&dir).unwrap_or(dir),
        }
    }

    /// The directory holding it all.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn url_file(&self) -> PathBuf {
        self.dir.join("url")
    }

    /// Starts the server and waits until it accepts connections: on first
    /// use, `initdb` (superuser `postgres` with a generated password), a
    /// free loopback port chosen and written to its configuration; later,
    /// the same data, port and password. Starting a running server does
    /// nothing (and says so in [`DevStarted::already_running`]).
    pub fn start(&self) -> Result<DevStarted, Error> {
        let bins = PgBins::find()?;
        let run_as = RunAs::detect()?;
        let mut created = false;
        if !self.data_dir().join("PG_VERSION").is_file() {
            self.create(&bins, run_as)?;
            created = true;
        }
        let url = self.url()?;
        if let DevStatus::Running { .. } = self.status_with(&bins, run_as)? {
            return Ok(DevStarted {
                url,
                created,
                already_running: true,
            });
        }
        let log = self.log_file();
        let mut cmd = Command::new(bins.path("pg_ctl"));
        cmd.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60"]);
        let out = run(cmd, run_as, &bins)?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "the development server in {} did not start ({}): {}{}\nits log ({}) ends:\n{}\nhint: \
                 if its port is taken now, change `port` in {}",
                self.data_dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                log.display(),
                tail(&log, 20),
                self.data_dir().join("postgresql.conf").display()
            )));
        }
        Ok(DevStarted {
            url,
            created,
            already_running: false,
        })
    }

    /// Stops the server (`pg_ctl stop -m fast`: open transactions rolled
    /// back, clients disconnected), keeping its data. Returns `false` when
    /// it was not running.
    pub fn stop(&self) -> Result<bool, Error> {
        let bins = PgBins::find()?;
        let run_as = RunAs::detect()?;
        if !matches!(self.status_with(&bins, run_as)?, DevStatus::Running { .. }) {
            return Ok(false);
        }
        let mut cmd = Command::new(bins.path("pg_ctl"));
        cmd.arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "-t", "60"]);
        let out = run(cmd, run_as, &bins)?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "cannot stop the development server in {} ({}): {}{}",
                self.data_dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(true)
    }

    /// Whether the server exists and runs (`pg_ctl status`).
    pub fn status(&self) -> Result<DevStatus, Error> {
        self.status_with(&PgBins::find()?, RunAs::detect()?)
    }

    fn status_with(&self, bins: &PgBins, run_as: Option<RunAs>) -> Result<DevStatus, Error> {
        if !self.data_dir().join("PG_VERSION").is_file() {
            return Ok(DevStatus::NotCreated);
        }
        let mut cmd = Command::new(bins.path("pg_ctl"));
        cmd.arg("status").arg("-D").arg(self.data_dir());
        let out = run(cmd, run_as, bins)?;
        // pg_ctl status: 0 running, 3 not running, 4 no data directory.
        match out.status.code() {
            Some(0) => {
                let text = String::from_utf8_lossy(&out.stdout);
                let pid = text
                    .split("PID: ")
                    .nth(1)
                    .and_then(|rest| rest.split(')').next())
                    .and_then(|pid| pid.trim().parse().ok())
                    .unwrap_or(0);
                Ok(DevStatus::Running { pid })
            }
            Some(3) => Ok(DevStatus::Stopped),
            _ => Err(Error::new(format!(
                "cannot read the state of the development server in {} ({}): {}{}",
                self.data_dir().display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))),
        }
    }

    /// The connection URL written when the server was created.
    pub fn url(&self) -> Result<String, Error> {
        let path = self.url_file();
        fs::read_to_string(&path)
            .map(|url| url.trim().to_string())
            .map_err(|e| {
                Error::new(format!(
                    "no development server in {} ({}: {e}): start one first (`appschema-cli dev start`)",
                    self.dir.display(),
                    path.display()
                ))
            })
    }

    /// `initdb`, the port and the URL file.
    fn create(&self, bins: &PgBins, run_as: Option<RunAs>) -> Result<(), Error> {
        let data = self.data_dir();
        fs::create_dir_all(&self.dir)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", self.dir.display())))?;
        let _ = fs::write(
            self.dir.join(".gitignore"),
            "# appschema-cli dev: local data\n*\n",
        );
        if let Some(user) = run_as {
            reachable_by(user, &self.dir)?;
        }
        // A data directory left by a failed initdb would be refused.
        if data.exists() {
            fs::remove_dir_all(&data)
                .map_err(|e| Error::new(format!("cannot remove {}: {e}", data.display())))?;
        }
        fs::create_dir(&data)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", data.display())))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::new(format!("cannot chmod {}: {e}", data.display())))?;
        let log = self.log_file();
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)
            .map_err(|e| Error::new(format!("cannot create {}: {e}", log.display())))?;
        let password = random_hex(16)?;
        let pwfile = self.dir.join(".initdb-password");
        write_private(&pwfile, &password)?;
        if let Some(user) = run_as {
            user.chown(&data)?;
            user.chown(&log)?;
            user.chown(&pwfile)?;
        }
        let mut initdb = Command::new(bins.path("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = run(initdb, run_as, bins);
        let _ = fs::remove_file(&pwfile);
        let out = out?;
        if !out.status.success() {
            return Err(Error::new(format!(
                "initdb of the development server failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let port = free_port()?;
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", conf.display())))?;
        text.push_str(&format!(
            "\n# appschema-cli dev: loopback TCP only, on a port chosen at creation\n\
             listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             max_connections = 200\n"
        ));
        fs::write(&conf, text)
            .map_err(|e| Error::new(format!("cannot write {}: {e}", conf.display())))?;
        write_private(
            &self.url_file(),
            &format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres\n"),
        )
    }
}

/// Runs `cmd` (as `run_as`), its output captured.
fn run(
    mut cmd: Command,
    run_as: Option<RunAs>,
    bins: &PgBins,
) -> Result<std::process::Output, Error> {
    if let Some(user) = run_as {
        user.apply(&mut cmd);
    }
    // The server pg_ctl starts writes to its log, not to our pipes.
    cmd.stdin(Stdio::null()).current_dir("/");
    cmd.output().map_err(|e| {
        Error::new(format!(
            "cannot run {}: {e} (PostgreSQL binaries in {})",
            Path::new(cmd.get_program()).display(),
            bins.dir().display()
        ))
    })
}

/// Fails, naming the directory to open, when `user` cannot reach `dir`
/// (a project under `/root`, mode 0700, is the usual case).
fn reachable_by(user: RunAs, dir: &Path) -> Result<(), Error> {
    let dir = fs::canonicalize(dir)
        .map_err(|e| Error::new(format!("cannot resolve {}: {e}", dir.display())))?;
    for ancestor in dir.ancestors() {
        let meta = fs::metadata(ancestor)
            .map_err(|e| Error::new(format!("cannot read {}: {e}", ancestor.display())))?;
        let mode = meta.mode();
        let ok = if meta.uid() == user.uid() {
            mode & 0o100 != 0
        } else if meta.gid() == user.gid() {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        };
        if !ok {
            return Err(Error::new(format!(
                "the server runs as the `postgres` user (PostgreSQL refuses to run as root), which \
                 cannot enter {}: allow it (`chmod o+x {}`), or keep the development server \
                 elsewhere (`--dir /var/tmp/myapp-dev`)",
                ancestor.display(),
                ancestor.display()
            )));
        }
    }
    Ok(())
}

/// Writes `text` to a new file only its owner may read.
fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write;
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
}

fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::new(format!("cannot read /dev/urandom: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A loopback port free right now.
fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("cannot find a free port on 127.0.0.1: {e}")))
}

/// The last `lines` lines of the file at `path`.
fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
