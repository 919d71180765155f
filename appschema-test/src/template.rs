//! Template databases: built once per content (migrations, tenants, spares),
//! copied for every test, with copies made ahead on a throwaway server.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use appschema_core::migrate::Migrator;
use appschema_core::provision::{self, NewTenant};
use appschema_core::registry::Tenant;
use appschema_core::{quote_ident, MigrationSet, PublicName};
use appschema_tempdb::{Server, TestDb};
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use crate::{connect, Error};

/// How many copies of a template are kept ready ahead of the tests that will
/// take them, on a throwaway server. None on a `DATABASE_URL` server: copies
/// left when the process ends would stay there.
const COPIES_AHEAD: usize = 2;

/// A built template database and the copies of it made ahead of time.
#[derive(Debug)]
pub(crate) struct Template {
    name: String,
    /// The registry rows of its tenants, the same in every copy: read from
    /// the first copy, so later set-ups need no connection.
    pub(crate) tenants: OnceLock<Vec<Tenant>>,
    ahead: usize,
    copies: Mutex<Copies>,
    /// Signalled when a copy made ahead is ready (or failed).
    made: Condvar,
}

#[derive(Debug, Default)]
struct Copies {
    ready: Vec<TestDb>,
    in_flight: usize,
}

impl Template {
    fn new(name: String, ahead: usize) -> Template {
        Template {
            name,
            tenants: OnceLock::new(),
            ahead,
            copies: Mutex::new(Copies::default()),
            made: Condvar::new(),
        }
    }

    fn copies(&self) -> MutexGuard<'_, Copies> {
        self.copies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A fresh copy of the template for one test: one made ahead if there
    /// is one, else the next one being made ahead, else one made now; then
    /// replacements start in the background.
    pub(crate) fn copy(self: &Arc<Self>) -> Result<TestDb, Error> {
        let mut copies = self.copies();
        let ahead = loop {
            if let Some(db) = copies.ready.pop() {
                break Some(db);
            }
            if copies.in_flight == 0 {
                break None;
            }
            copies = self
                .made
                .wait(copies)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        };
        drop(copies);
        let copy = match ahead {
            Some(db) => db,
            None => TestDb::try_from_template(&self.name).map_err(|e| Error::new(e.to_string()))?,
        };
        self.refill();
        Ok(copy)
    }

    /// Starts making copies ahead, each in a thread of its own, until enough
    /// are ready or being made.
    fn refill(self: &Arc<Self>) {
        let mut copies = self.copies();
        while copies.ready.len() + copies.in_flight < self.ahead {
            copies.in_flight += 1;
            let template = Arc::clone(self);
            std::thread::spawn(move || {
                // A failure here shows again, with its reason, when a test
                // makes its copy itself.
                let made = TestDb::try_from_template(&template.name).ok();
                let mut copies = template.copies();
                copies.in_flight -= 1;
                copies.ready.extend(made);
                drop(copies);
                template.made.notify_all();
            });
        }
    }
}

/// The template database holding `migrations` applied, `tenants` created
/// and `spares` spare schemas, built now unless this process (or, on a
/// `DATABASE_URL` server, an earlier one) already built it.
pub(crate) fn ready(
    migrations: &MigrationSet,
    tenants: &[PublicName],
    spares: usize,
) -> Result<Arc<Template>, Error> {
    type Slot = Arc<OnceLock<Result<Arc<Template>, Error>>>;
    static BUILT: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let name = format!(
        "appschema_tpl_{:016x}",
        content_hash(migrations, tenants, spares)
    );
    let slot = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(name.clone())
        .or_default()
        .clone();
    // Tests wanting the same template wait for the one building it; tests
    // wanting another one build theirs meanwhile.
    slot.get_or_init(|| {
        let name = build(&name, migrations, tenants, spares)?;
        let ahead = match appschema_tempdb::server() {
            Server::Temp(_) => COPIES_AHEAD,
            Server::External { .. } | Server::Citus(_) => 0,
        };
        Ok(Arc::new(Template::new(name, ahead)))
    })
    .clone()
}

/// FNV-1a over everything the template holds: stable across processes and
/// compiler versions (unlike `DefaultHasher`), so a `DATABASE_URL` server's
/// templates are found again by later runs.
fn content_hash(migrations: &MigrationSet, tenants: &[PublicName], spares: usize) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        // Length first, so ("ab", "c") and ("a", "bc") differ.
        for byte in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for m in migrations.migrations() {
        feed(m.version().as_bytes());
        feed(m.scope().to_string().as_bytes());
        feed(&[u8::from(m.run_in_transaction())]);
        feed(m.up_sql().as_bytes());
    }
    feed(b"tenants");
    for tenant in tenants {
        feed(tenant.as_str().as_bytes());
    }
    feed(&(spares as u64).to_le_bytes());
    hash
}

fn build(
    name: &str,
    migrations: &MigrationSet,
    tenants: &[PublicName],
    spares: usize,
) -> Result<String, Error> {
    let server = appschema_tempdb::server();
    let mut admin = connect(&server.url())?;
    if database_exists(&mut admin, name)? {
        return Ok(name.to_string());
    }
    // Built under a name of its own and renamed when complete, so another
    // process never copies a half-built template.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let scratch = format!("{name}_{}_{nanos}", std::process::id());
    execute(
        &mut admin,
        &format!("CREATE DATABASE {}", quote_ident(&scratch)),
    )?;
    let filled = fill(&server.url_for(&scratch), migrations, tenants, spares);
    let renamed = filled.and_then(|()| {
        rename_when_idle(&mut admin, &scratch, name)
            .map_err(|e| Error::new(format!("cannot rename template {scratch} to {name}: {e}")))
    });
    match renamed {
        Ok(()) => {}
        // Another process finished the same template first: use theirs.
        Err(_) if database_exists(&mut admin, name)? => {
            drop_database(&mut admin, &scratch);
            return Ok(name.to_string());
        }
        Err(e) => {
            drop_database(&mut admin, &scratch);
            return Err(e);
        }
    }
    // A session on a template makes every copy fail ("source database is
    // being accessed by other users"): let no one connect to it any more.
    execute(
        &mut admin,
        &format!(
            "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
            quote_ident(name)
        ),
    )?;
    Ok(name.to_string())
}

/// Migrates the database at `url`, creates the tenants, builds the spares.
pub(crate) fn fill(
    url: &str,
    migrations: &MigrationSet,
    tenants: &[PublicName],
    spares: usize,
) -> Result<(), Error> {
    let report = Migrator::new(url)
        .jobs(1)
        .migrate(migrations, &|_| {})
        .map_err(|e| Error::new(format!("cannot migrate the template: {e}")))?;
    if let Some(failure) = report.failures.first() {
        return Err(Error::new(format!(
            "a migration failed in the template: {failure}"
        )));
    }
    let mut conn = connect(url)?;
    for public_name in tenants {
        let request = NewTenant::new(public_name.as_str())
            .map_err(|e| Error::new(format!("tenant `{public_name}`: {e}")))?;
        provision::create_tenant(&mut conn, migrations, &request)
            .map_err(|e| Error::new(format!("cannot create tenant `{public_name}`: {e}")))?;
    }
    provision::ensure_spares(&mut conn, migrations, spares)
        .map_err(|e| Error::new(format!("cannot build the spare schemas: {e}")))?;
    Ok(())
}

/// `ALTER DATABASE .. RENAME`, retried while the backends that filled it
/// are still exiting (PostgreSQL refuses to rename a database in use).
fn rename_when_idle(admin: &mut PgConnection, from: &str, to: &str) -> QueryResult<()> {
    let sql = format!(
        "ALTER DATABASE {} RENAME TO {}",
        quote_ident(from),
        quote_ident(to)
    );
    let mut tries = 0;
    loop {
        match diesel::sql_query(&sql).execute(admin) {
            Ok(_) => return Ok(()),
            Err(e) if tries < 50 && e.to_string().contains("being accessed by other users") => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    value: bool,
}

fn database_exists(admin: &mut PgConnection, name: &str) -> Result<bool, Error> {
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS value")
        .bind::<Text, _>(name)
        .get_result::<Exists>(admin)
        .map(|row| row.value)
        .map_err(|e| Error::new(format!("cannot list databases: {e}")))
}

fn execute(admin: &mut PgConnection, sql: &str) -> Result<(), Error> {
    diesel::sql_query(sql)
        .execute(admin)
        .map(drop)
        .map_err(|e| Error::new(format!("`{sql}` failed: {e}")))
}

fn drop_database(admin: &mut PgConnection, name: &str) {
    let _ = diesel::sql_query(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)
    ))
    .execute(admin);
}
