//! A throwaway cluster that speaks TLS on TCP, for tests of `sslmode`.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cluster::TempCluster;
use crate::process::{Kind, RunAs};
use crate::Error;

/// A [`TempCluster`] that also listens on TCP at `127.0.0.1`, with
/// `ssl = on`, a server certificate for `localhost` (only: `127.0.0.1` is
/// an address it does not name, for tests of host name checks) signed by a
/// certificate authority generated when it starts (with the `openssl`
/// binary), and a `pg_hba.conf` that accepts TCP connections only over TLS
/// (`hostssl`; unix-socket connections as usual). TCP connections need no
/// password, except as role `appschema_scram` (which a test creates, with
/// a password): that one authenticates with SCRAM, for channel binding.
///
/// Alongside, a second CA that signed nothing the server presents: a client
/// that trusts only it must refuse the server.
///
/// ```no_run
/// let tls = appschema_tempdb::TempTlsCluster::start().unwrap();
/// let url = format!(
///     "{}?sslmode=verify-full&sslrootcert={}",
///     tls.tcp_url_for("postgres"),
///     tls.ca_cert().display()
/// );
/// ```
#[derive(Debug)]
pub struct TempTlsCluster {
    cluster: TempCluster,
    certs: PathBuf,
}

/// Ports are picked free then handed to the server, which may lose one to
/// another process in between: a few tries.
const START_TRIES: usize = 5;

impl TempTlsCluster {
    /// Generates the certificates and starts the cluster, waiting until it
    /// accepts connections. Needs `openssl` on `PATH`.
    pub fn start() -> Result<TempTlsCluster, Error> {
        Self::start_with_hba(write_certificates)
    }

    /// Like [`TempTlsCluster::start`], but TCP connections without TLS are
    /// accepted too (`host` rather than `hostssl`): for benchmarks that
    /// compare the two on the same server.
    pub fn start_allowing_plaintext_tcp() -> Result<TempTlsCluster, Error> {
        Self::start_with_hba(|dir, run_as| {
            write_certificates(dir, run_as)?;
            write(
                &dir.join("tls/pg_hba.conf"),
                &PG_HBA.replace("hostssl", "host"),
            )
        })
    }

    fn start_with_hba(
        prepare: impl Fn(&Path, Option<RunAs>) -> Result<(), Error>,
    ) -> Result<TempTlsCluster, Error> {
        let mut last = None;
        for _ in 0..START_TRIES {
            let port = free_tcp_port()?;
            // `Kind`s are static: one per port tried, a few bytes each.
            let kind: &'static Kind = Box::leak(Box::new(Kind {
                name: "postgres (TLS)",
                tag: "pgtls",
                port,
                start_timeout: Duration::from_secs(60),
                stop_signal: libc::SIGINT,
            }));
            let settings = [
                ("listen_addresses", "127.0.0.1"),
                ("ssl", "on"),
                ("ssl_cert_file", "{dir}/tls/server.crt"),
                ("ssl_key_file", "{dir}/tls/server.key"),
                ("hba_file", "{dir}/tls/pg_hba.conf"),
            ];
            match TempCluster::start_kind(kind, &settings, &prepare) {
                Ok(cluster) => {
                    let certs = cluster.dir().join("tls");
                    return Ok(TempTlsCluster { cluster, certs });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once"))
    }

    /// The cluster (its unix-socket URLs, its log, its directory).
    pub fn cluster(&self) -> &TempCluster {
        &self.cluster
    }

    /// The TCP port the server listens on at `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// A TCP URL for database `dbname` as the superuser `postgres`, host
    /// `localhost`, with no `sslmode`: add the query the test is about.
    pub fn tcp_url_for(&self, dbname: &str) -> String {
        format!("postgres://postgres@localhost:{}/{dbname}", self.port())
    }

    /// The PEM file of the CA that signed the server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.certs.join("ca.crt")
    }

    /// The PEM file of a CA that signed nothing the server presents.
    pub fn untrusted_ca_cert(&self) -> PathBuf {
        self.certs.join("other-ca.crt")
    }
}

fn free_tcp_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::new(format!("cannot find a free TCP port on 127.0.0.1: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::new(format!("cannot find a free TCP port on 127.0.0.1: {e}")))
}

const PG_HBA: &str = "\
local all all trust
hostssl all appschema_scram 127.0.0.1/32 scram-sha-256
hostssl all all 127.0.0.1/32 trust
hostssl all all ::1/128 trust
";

const SERVER_EXTENSIONS: &str = "\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost
";

/// Writes `<dir>/tls/`: two CAs, a server key and certificate signed by the
/// first, and `pg_hba.conf`; what the server reads is handed to its user.
fn write_certificates(dir: &Path, run_as: Option<RunAs>) -> Result<(), Error> {
    let tls = dir.join("tls");
    fs::create_dir(&tls)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", tls.display())))?;
    for ca in ["ca", "other-ca"] {
        openssl(
            &tls,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=appschema test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
            ],
        )?;
    }
    openssl(
        &tls,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    )?;
    write(&tls.join("server.ext"), SERVER_EXTENSIONS)?;
    openssl(
        &tls,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "1",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )?;
    write(&tls.join("pg_hba.conf"), PG_HBA)?;
    let key = tls.join("server.key");
    // PostgreSQL refuses a key file others can read.
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::new(format!("cannot chmod {}: {e}", key.display())))?;
    if let Some(user) = run_as {
        for file in ["", "server.crt", "server.key", "pg_hba.conf"] {
            user.chown(&tls.join(file))?;
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            Error::new(format!(
                "cannot run openssl (install it: apt-get install openssl): {e}"
            ))
        })?;
    if !out.status.success() {
        return Err(Error::new(format!(
            "openssl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}
