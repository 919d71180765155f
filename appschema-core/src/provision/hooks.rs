//! Lifecycle hooks: the application's code run inside the transaction that
//! creates or drops a tenant, so that work commits with it or not at all.

use std::fmt;
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use super::archive::DropMode;
use super::error::ProvisionError;
use crate::registry::Tenant;

/// What a hook returns when it fails: any error.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookStage {
    /// After the tenant's registry rows and schema were made, before the
    /// creating transaction commits.
    AfterCreate,
    /// Before the tenant's registry rows and schema go, in the dropping
    /// (or archiving) transaction.
    BeforeDrop(DropMode),
    /// After a migration run applied migrations to the tenant, in a
    /// transaction of its own (see [`crate::migrate::Migrator::hooks`]).
    AfterMigrate,
}

impl HookStage {
    fn describe(self) -> &'static str {
        match self {
            HookStage::AfterCreate => "after creating",
            HookStage::BeforeDrop(DropMode::Drop) => "before dropping",
            HookStage::BeforeDrop(DropMode::Archive) => "before archiving",
            HookStage::AfterMigrate => "after migrating",
        }
    }
}

/// A run of hooks on one tenant at one stage, written once for the
/// blocking runner ([`Hooks`]) and the async one
/// (`appschema_async::AsyncHooks`): the statements around the hooks (the
/// transaction's `search_path` saved, set to the tenant's, restored) and
/// what a hook's failure means. Not a stable API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub struct HookRun<'t> {
    tenant: &'t Tenant,
    stage: HookStage,
}

impl<'t> HookRun<'t> {
    /// Reads the transaction's `search_path` (one `TextRow`), to restore
    /// after the hooks.
    pub const SAVE_PATH: &'static str = "SELECT pg_catalog.current_setting('search_path') AS value";
    /// Restores the path [`SAVE_PATH`](Self::SAVE_PATH) read (`$1`, text),
    /// for the rest of the transaction.
    pub const RESTORE_PATH: &'static str = "SELECT pg_catalog.set_config('search_path', $1, true)";

    /// A run on `tenant` at `stage`.
    pub fn new(tenant: &'t Tenant, stage: HookStage) -> HookRun<'t> {
        HookRun { tenant, stage }
    }

    /// Puts the transaction on the tenant's path (`"<schema>", public`) for
    /// the hooks.
    pub fn enter_sql(&self) -> String {
        format!(
            "SET LOCAL search_path TO {}, public",
            self.tenant.schema_name.quoted()
        )
    }

    /// The error of the hook named `hook`, failed with `error`.
    pub fn failed(&self, hook: &str, error: HookError) -> ProvisionError {
        ProvisionError::Hook {
            hook: hook.to_string(),
            stage: self.stage.describe(),
            public_name: self.tenant.public_name.clone(),
            schema: self.tenant.schema_name.to_string(),
            error,
        }
    }
}

/// Code the application runs at points of a tenant's life, inside the
/// transaction of that change. Each method has a do-nothing default.
///
/// A hook gets the transaction's connection with its `search_path` set to
/// `"<tenant schema>", public` (so unqualified names are the tenant's
/// tables, `#[appschema::shared]` tables are reached as usual), restored
/// when it returns. An error (or anything that aborts the transaction)
/// rolls the whole change back: a failing [`TenantHook::after_create`]
/// leaves no tenant, no schema and no registry row, a failing
/// [`TenantHook::before_drop`] leaves the tenant as it was. The operation
/// then fails with [`ProvisionError::Hook`], naming the hook and the tenant.
///
/// Keep hooks short and local to the database (they hold the transaction
/// open, and with it the new tenant's name): write first rows, or enqueue a
/// job in a table for a worker to pick up after the commit; do not send the
/// welcome e-mail from inside, since a later rollback cannot unsend it.
pub trait TenantHook: Send + Sync {
    /// The hook's name, used in errors.
    fn name(&self) -> &str;

    /// Runs after `tenant` was created, by any source (migrations,
    /// template, spare, clone, import), before the commit.
    fn after_create(&self, conn: &mut PgConnection, tenant: &Tenant) -> Result<(), HookError> {
        let _ = (conn, tenant);
        Ok(())
    }

    /// Runs before `tenant` is dropped or archived (`mode`), in that
    /// transaction: the tenant's rows are still there.
    fn before_drop(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        mode: DropMode,
    ) -> Result<(), HookError> {
        let _ = (conn, tenant, mode);
        Ok(())
    }

    /// Runs after a migration run ([`crate::migrate::Migrator::hooks`])
    /// applied migrations to `tenant`: after they committed, in a
    /// transaction of its own, so a failure rolls back only what the hook
    /// wrote and is reported as a failure of that schema.
    fn after_migrate(&self, conn: &mut PgConnection, tenant: &Tenant) -> Result<(), HookError> {
        let _ = (conn, tenant);
        Ok(())
    }
}

/// The hooks an operation runs, in the order they were added. Cheap to
/// clone; keep one in the application's state and hand it to each
/// provisioning call ([`super::NewTenant::hooks`],
/// [`super::ImportOptions::hooks`], [`super::drop_tenant_with_hooks`]).
///
/// ```no_run
/// # use diesel::Connection;
/// # let migrations = appschema::MigrationSet::default(); // embedded at build time
/// use appschema::provision::{create_tenant, Hooks, NewTenant};
/// use diesel::connection::SimpleConnection;
///
/// let hooks = Hooks::new().after_create("first-account", |conn, tenant| {
///     // The connection is on the tenant's schema, in the creating transaction.
///     conn.batch_execute("INSERT INTO account (display_name) VALUES ('owner')")?;
///     Ok(())
/// });
/// let mut conn = diesel::PgConnection::establish("postgres:///app")?;
/// let request = NewTenant::new("acme.example.com")?.hooks(hooks.clone());
/// create_tenant(&mut conn, &migrations, &request)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct Hooks(Vec<Arc<dyn TenantHook>>);

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|h| h.name()))
            .finish()
    }
}

/// Two hook lists are equal when they hold the same hooks (by identity).
impl PartialEq for Hooks {
    fn eq(&self, other: &Hooks) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

impl Eq for Hooks {}

struct FnHook<F> {
    name: String,
    stage: Stage,
    f: F,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Create,
    Drop,
    Migrate,
}

impl<F> TenantHook for FnHook<F>
where
    F: Fn(&mut PgConnection, &Tenant) -> Result<(), HookError> + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn after_create(&self, conn: &mut PgConnection, tenant: &Tenant) -> Result<(), HookError> {
        match self.stage {
            Stage::Create => (self.f)(conn, tenant),
            _ => Ok(()),
        }
    }

    fn before_drop(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        _mode: DropMode,
    ) -> Result<(), HookError> {
        match self.stage {
            Stage::Drop => (self.f)(conn, tenant),
            _ => Ok(()),
        }
    }

    fn after_migrate(&self, conn: &mut PgConnection, tenant: &Tenant) -> Result<(), HookError> {
        match self.stage {
            Stage::Migrate => (self.f)(conn, tenant),
            _ => Ok(()),
        }
    }
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Hooks {
        Hooks::default()
    }

    /// Adds `hook`.
    pub fn with(mut self, hook: impl TenantHook + 'static) -> Hooks {
        self.0.push(Arc::new(hook));
        self
    }

    /// Adds a [`TenantHook::after_create`] hook named `name` running `f`.
    pub fn after_create<F>(self, name: &str, f: F) -> Hooks
    where
        F: Fn(&mut PgConnection, &Tenant) -> Result<(), HookError> + Send + Sync + 'static,
    {
        self.with(FnHook {
            name: name.to_string(),
            stage: Stage::Create,
            f,
        })
    }

    /// Adds a [`TenantHook::before_drop`] hook named `name` running `f`
    /// (for drops and archives alike).
    pub fn before_drop<F>(self, name: &str, f: F) -> Hooks
    where
        F: Fn(&mut PgConnection, &Tenant) -> Result<(), HookError> + Send + Sync + 'static,
    {
        self.with(FnHook {
            name: name.to_string(),
            stage: Stage::Drop,
            f,
        })
    }

    /// Adds a [`TenantHook::after_migrate`] hook named `name` running `f`.
    pub fn after_migrate<F>(self, name: &str, f: F) -> Hooks
    where
        F: Fn(&mut PgConnection, &Tenant) -> Result<(), HookError> + Send + Sync + 'static,
    {
        self.with(FnHook {
            name: name.to_string(),
            stage: Stage::Migrate,
            f,
        })
    }

    /// Whether there are no hooks.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs every hook's `stage` method for `tenant` on `conn` (inside the
    /// caller's transaction), on the tenant's `search_path`; the first
    /// failure stops and is returned as [`ProvisionError::Hook`].
    pub(crate) fn run(
        &self,
        conn: &mut PgConnection,
        tenant: &Tenant,
        stage: HookStage,
    ) -> Result<(), ProvisionError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let run = HookRun::new(tenant, stage);
        let saved = diesel::sql_query(HookRun::SAVE_PATH)
            .get_result::<super::util::TextRow>(conn)?
            .value;
        conn.batch_execute(&run.enter_sql())?;
        for hook in &self.0 {
            let outcome = match stage {
                HookStage::AfterCreate => hook.after_create(conn, tenant),
                HookStage::BeforeDrop(mode) => hook.before_drop(conn, tenant, mode),
                HookStage::AfterMigrate => hook.after_migrate(conn, tenant),
            };
            if let Err(error) = outcome {
                return Err(run.failed(hook.name(), error));
            }
        }
        diesel::sql_query(HookRun::RESTORE_PATH)
            .bind::<Text, _>(saved)
            .execute(conn)?;
        Ok(())
    }
}
