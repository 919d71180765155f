//! A throwaway Citus cluster on one machine: a coordinator and two workers,
//! each a [`TempCluster`] with Citus preloaded, reaching each other over
//! their unix sockets (a node's name is its socket directory).

use std::path::PathBuf;
use std::sync::OnceLock;

use diesel::{Connection, PgConnection};

use crate::bins::PgBins;
use crate::testdb::quote_ident;
use crate::{Error, TempCluster};

/// What each node needs: Citus loaded at start-up, logical decoding for
/// `citus_schema_move`'s default (logical replication) mode, and its own
/// name as the other nodes know it (the default, `localhost`, would mean
/// TCP, on which these clusters do not listen).
const NODE_SETTINGS: &[(&str, &str)] = &[
    ("shared_preload_libraries", "citus"),
    ("wal_level", "logical"),
    ("max_replication_slots", "20"),
    ("max_wal_senders", "20"),
    ("citus.local_hostname", "{dir}"),
    // One machine, two cores: keep Citus's background work quiet.
    ("citus.max_background_task_executors_per_node", "1"),
];

/// A Citus coordinator and two workers that exist for as long as this value
/// does (each stopped and deleted like a [`TempCluster`]).
///
/// Citus keeps its node list per database: [`TempCitus::create_database`]
/// creates a database on every node, installs the extension in each and
/// registers the workers with the coordinator.
///
/// ```no_run
/// if let Err(why) = appschema_tempdb::TempCitus::installed() {
///     eprintln!("skipping: {why}");
///     return;
/// }
/// let citus = appschema_tempdb::TempCitus::start().unwrap();
/// let url = citus.create_database("app").unwrap();
/// println!("the coordinator: {url}");
/// ```
#[derive(Debug)]
pub struct TempCitus {
    coordinator: TempCluster,
    workers: Vec<TempCluster>,
    /// Registering the nodes in a database also syncs roles to the workers
    /// (`worker_create_or_alter_role`), and roles are cluster-wide: two
    /// databases doing it at once fail with "tuple concurrently updated".
    /// Registrations take turns.
    registering: std::sync::Mutex<()>,
}

impl TempCitus {
    /// `Ok` when the Citus extension is installed for the PostgreSQL
    /// server binaries found (see [`TempCluster::start`]); otherwise the
    /// reason, naming how to install it.
    pub fn installed() -> Result<(), Error> {
        let bins = PgBins::find()?;
        let lib = pkglibdir(&bins);
        if lib.join("citus.so").is_file() {
            Ok(())
        } else {
            Err(Error::new(format!(
                "Citus is not installed ({} has no citus.so): run ../shared/citus/install.sh \
                 (builds Citus 13.2.2 for PostgreSQL 15), or install the citus package of your \
                 PostgreSQL version",
                lib.display()
            )))
        }
    }

    /// Starts the three clusters (in parallel) with Citus preloaded.
    pub fn start() -> Result<TempCitus, Error> {
        Self::installed()?;
        let start = || TempCluster::start_with(NODE_SETTINGS);
        let (coordinator, w1, w2) = std::thread::scope(|s| {
            let w1 = s.spawn(start);
            let w2 = s.spawn(start);
            let c = start();
            (
                c,
                w1.join().expect("start thread panicked"),
                w2.join().expect("start thread panicked"),
            )
        });
        let citus = TempCitus {
            coordinator: coordinator?,
            workers: vec![w1?, w2?],
            registering: std::sync::Mutex::new(()),
        };
        // The `postgres` database too: what `url()` names (the demo on
        // Citus runs there).
        citus.set_up_database("postgres")?;
        Ok(citus)
    }

    /// The coordinator: where applications connect.
    pub fn coordinator(&self) -> &TempCluster {
        &self.coordinator
    }

    /// The workers.
    pub fn workers(&self) -> &[TempCluster] {
        &self.workers
    }

    /// Every node, the coordinator first.
    pub fn nodes(&self) -> impl Iterator<Item = &TempCluster> {
        std::iter::once(&self.coordinator).chain(&self.workers)
    }

    /// A node's name as Citus knows it (`pg_dist_node.nodename`): its
    /// socket directory. Its port is [`TempCluster::port`].
    pub fn node_name(node: &TempCluster) -> String {
        node.socket_dir().display().to_string()
    }

    /// Creates database `name` on every node, with the `citus` extension,
    /// and registers the coordinator and the workers in it. Returns the
    /// coordinator's URL for it.
    pub fn create_database(&self, name: &str) -> Result<String, Error> {
        self.create_database_from(name, None)
    }

    /// Like [`TempCitus::create_database`], each node's database copied
    /// from that node's `template` (made by this function too).
    pub fn create_database_from(
        &self,
        name: &str,
        template: Option<&str>,
    ) -> Result<String, Error> {
        let copy = match template {
            Some(t) => format!(" TEMPLATE {}", quote_ident(t)),
            None => String::new(),
        };
        for node in self.nodes() {
            execute(
                &node.url(),
                &format!("CREATE DATABASE {}{copy}", quote_ident(name)),
            )?;
        }
        if template.is_some() {
            // The copies carry the template's extension and node list.
            return Ok(self.coordinator.url_for(name));
        }
        self.set_up_database(name)?;
        Ok(self.coordinator.url_for(name))
    }

    /// Installs the extension in database `name` on every node and
    /// registers the nodes in it.
    fn set_up_database(&self, name: &str) -> Result<(), Error> {
        for node in self.nodes() {
            execute(&node.url_for(name), "CREATE EXTENSION citus")?;
        }
        let mut setup = format!(
            "SELECT citus_set_coordinator_host({}, {});",
            quote_literal(&Self::node_name(&self.coordinator)),
            self.coordinator.port()
        );
        for worker in &self.workers {
            setup.push_str(&format!(
                "SELECT citus_add_node({}, {});",
                quote_literal(&Self::node_name(worker)),
                worker.port()
            ));
        }
        let _turn = self
            .registering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        execute(&self.coordinator.url_for(name), &setup).map_err(|e| {
            let tails: Vec<String> = self
                .workers
                .iter()
                .map(|w| {
                    let log = w.log();
                    let lines: Vec<&str> = log.lines().collect();
                    lines[lines.len().saturating_sub(15)..].join("\n")
                })
                .collect();
            Error::new(format!(
                "{e}\nthe workers' logs end:\n{}",
                tails.join("\n---\n")
            ))
        })
    }

    /// Drops database `name` on every node (forcing its connections off).
    pub fn drop_database(&self, name: &str) -> Result<(), Error> {
        for node in self.nodes() {
            execute(
                &node.url(),
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)),
            )?;
        }
        Ok(())
    }
}

fn pkglibdir(bins: &PgBins) -> PathBuf {
    // The real directory of `postgres` (a PATH entry may hold symlinks to
    // it): its `pg_config` knows where extensions go.
    let dir = std::fs::canonicalize(bins.path("postgres"))
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| bins.dir().to_path_buf());
    let out = std::process::Command::new(dir.join("pg_config"))
        .arg("--pkglibdir")
        .output();
    match out {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
        // Debian's layout: /usr/lib/postgresql/<v>/{bin,lib}.
        _ => dir.parent().unwrap_or(&dir).join("lib"),
    }
}

fn execute(url: &str, sql: &str) -> Result<(), Error> {
    let mut conn = PgConnection::establish(url)
        .map_err(|e| Error::new(format!("cannot connect to {url}: {e}")))?;
    diesel::connection::SimpleConnection::batch_execute(&mut conn, sql)
        .map_err(|e| Error::new(format!("`{sql}` failed on {url}: {e}")))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The process-wide Citus cluster for a test suite of its own, started on
/// first use; `None`, with the reason printed, when Citus is not installed —
/// unless `APPSCHEMA_REQUIRE_CITUS=1` (as CI sets), which makes that a
/// panic, so that a suite meant to run never passes by skipping.
pub fn citus_for_tests() -> Option<&'static TempCitus> {
    static CITUS: OnceLock<Option<TempCitus>> = OnceLock::new();
    CITUS
        .get_or_init(|| {
            let required = std::env::var("APPSCHEMA_REQUIRE_CITUS").is_ok_and(|v| v == "1");
            match TempCitus::installed() {
                Ok(()) => Some(
                    TempCitus::start()
                        .unwrap_or_else(|e| panic!("cannot start a Citus cluster: {e}")),
                ),
                Err(why) if required => panic!("APPSCHEMA_REQUIRE_CITUS=1, but {why}"),
                Err(why) => {
                    eprintln!("skipping the Citus tests: {why}");
                    None
                }
            }
        })
        .as_ref()
}

/// A database of its own on every node of [`citus_for_tests`]'s cluster,
/// dropped with this value.
///
/// ```no_run
/// let Some(db) = appschema_tempdb::CitusTestDb::new("my_test") else {
///     return; // Citus is not installed: skipped, as printed
/// };
/// println!("coordinator: {}, a worker: {}", db.url(), db.worker(0));
/// ```
#[derive(Debug)]
pub struct CitusTestDb {
    citus: &'static TempCitus,
    name: String,
    url: String,
}

impl CitusTestDb {
    /// A database named after `test` (and the process), or `None` when
    /// Citus is not installed (see [`citus_for_tests`]).
    pub fn new(test: &str) -> Option<CitusTestDb> {
        let citus = citus_for_tests()?;
        let name = format!("citus_{test}_{}", std::process::id());
        let url = citus
            .create_database(&name)
            .unwrap_or_else(|e| panic!("cannot create Citus database {name}: {e}"));
        Some(CitusTestDb { citus, name, url })
    }

    /// The coordinator's URL for this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection to the coordinator, notices quieted.
    pub fn conn(&self) -> PgConnection {
        let mut conn = PgConnection::establish(&self.url)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.url));
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            "SET client_min_messages TO warning",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    /// Worker `i`'s address as Citus knows it: `HOST:PORT`.
    pub fn worker(&self, i: usize) -> String {
        let w = &self.citus.workers()[i];
        format!("{}:{}", TempCitus::node_name(w), w.port())
    }
}

impl Drop for CitusTestDb {
    fn drop(&mut self) {
        let _ = self.citus.drop_database(&self.name);
    }
}
