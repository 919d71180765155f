//! Sign-up from an async handler: a tenant made of a spare schema (one
//! rename), without a blocking thread.
//!
//! Claiming a spare is a handful of short statements; building a schema by
//! its migrations is not (and runs the application's migration code, which
//! is blocking diesel). So [`claim_spare`] does the former on an
//! [`AsyncPgConnection`], taking what `appschema::provision::create_tenant`
//! takes (the connection, the migrations, the request), with the same
//! steps, SQL and error decoding as its `Source::Spare` (one
//! `SpareClaim`, from `appschema-core`, decides for both; this module only
//! runs its statements), and answers `None` when no spare at the isolated
//! head is free: then the caller builds the tenant the blocking way
//! (`create_tenant` on `spawn_blocking`), as the sync path itself falls
//! back.

use appschema_core::provision::internals::{
    derived_candidate, registry_conflict, tries_next_name, BoolRow, HookRun, SpareAnswer,
    SpareClaim, SpareStep, TenantRow, TextRow, INSERT_TENANT, MAX_DERIVED_ATTEMPTS,
};
use std::fmt;
use std::sync::Arc;

use appschema_core::provision::{
    Created, HookError, HookStage, IsolatedMigrations, NewTenant, ProvisionError, Source,
};
use appschema_core::registry::Tenant;
use diesel::sql_types::Text;
use diesel::OptionalExtension;
use diesel_async::{
    AnsiTransactionManager, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection,
    TransactionManager,
};
use scoped_futures::{ScopedBoxFuture, ScopedFutureExt};

/// Creates the tenant `request` asks for from a spare schema, in one
/// transaction on `conn`: its registry rows, and the oldest free spare
/// renamed to its schema (`SKIP LOCKED`: concurrent sign-ups take different
/// spares). The arguments are `create_tenant`'s: `migrations` are the
/// application's (the spare must be at their isolated head; only
/// [`IsolatedMigrations::head`] is read, no migration runs here).
///
/// Returns `Ok(None)`, with nothing changed, when no free spare is at the
/// head (a spare behind it, left by a newer migration, is given back for
/// `migrate` to bring up to date): create the tenant with
/// `appschema::provision::create_tenant` on a blocking thread then (it
/// builds the schema by spare, template or migrations).
/// Conflicts are the sync path's errors ([`ProvisionError::TenantExists`],
/// `SchemaExists`, …); a derived schema name that is taken is retried with a
/// suffix, as there. Every resolver of the process forgets its cached
/// answers once the transaction ends.
///
/// Refused inside an open transaction (the rename and the registry rows
/// must commit together, and alone), and for a request carrying blocking
/// hooks (`NewTenant::hooks`: [`ProvisionError::BlockingHooksOnAsyncPath`];
/// async ones go to [`claim_spare_with_hooks`]), which would otherwise be
/// skipped.
///
/// ```no_run
/// use appschema::async_pool::{claim_spare, AsyncSharedPool};
/// use appschema::provision::{NewTenant, Source};
/// use appschema::MigrationSet;
///
/// # async fn run(pool: AsyncSharedPool, migrations: MigrationSet) -> Result<(), Box<dyn std::error::Error>> {
/// let request = NewTenant::new("acme.example.com")?.source(Source::Spare);
/// let mut conn = pool.get_shared().await?;
/// match claim_spare(&mut conn, &migrations, &request).await? {
///     Some(created) => println!("{} is ready", created.tenant.schema_name),
///     None => { /* no spare left: provision::create_tenant on spawn_blocking */ }
/// }
/// # Ok(())
/// # }
/// ```
pub async fn claim_spare<M: IsolatedMigrations + ?Sized>(
    conn: &mut AsyncPgConnection,
    migrations: &M,
    request: &NewTenant,
) -> Result<Option<Created>, ProvisionError> {
    claim_spare_with(conn, migrations, request, |_, _| {
        async { Ok(()) }.scope_boxed()
    })
    .await
}

/// [`claim_spare`], plus the new tenant's first rows in the same
/// transaction: `init` runs once the spare is the tenant's, before the
/// commit, so the tenant exists with them or not at all (a sign-up's
/// account row, say). It gets the connection, on the shared-only path (it
/// may `SET LOCAL search_path` to the tenant's schema), and the tenant. An
/// error of `init` rolls everything back and is returned as
/// [`ProvisionError::Database`]; `init` does not run when the answer is
/// `Ok(None)` (no free spare at the head) or a conflict.
///
/// ```no_run
/// use appschema::async_pool::{claim_spare_with, AsyncSharedPool};
/// use appschema::async_pool::scoped_futures::ScopedFutureExt;
/// use appschema::provision::{NewTenant, Source};
/// use appschema::MigrationSet;
/// use diesel_async::SimpleAsyncConnection;
///
/// # async fn run(pool: AsyncSharedPool, migrations: MigrationSet) -> Result<(), Box<dyn std::error::Error>> {
/// let request = NewTenant::new("acme.example.com")?.source(Source::Spare);
/// let mut conn = pool.get_shared().await?;
/// let created = claim_spare_with(&mut conn, &migrations, &request, |conn, created| {
///     let schema = created.tenant.schema_name.quoted();
///     async move {
///         conn.batch_execute(&format!(
///             "SET LOCAL search_path TO {schema}, public; \
///              INSERT INTO account (display_name) VALUES ('Acme')"
///         ))
///         .await
///     }
///     .scope_boxed()
/// })
/// .await?;
/// # Ok(())
/// # }
/// ```
pub async fn claim_spare_with<'a, M, F>(
    conn: &mut AsyncPgConnection,
    migrations: &M,
    request: &NewTenant,
    init: F,
) -> Result<Option<Created>, ProvisionError>
where
    M: IsolatedMigrations + ?Sized,
    F: for<'r> FnOnce(
            &'r mut AsyncPgConnection,
            &'r Created,
        ) -> ScopedBoxFuture<'a, 'r, Result<(), diesel::result::Error>>
        + Send
        + 'a,
{
    claim(conn, migrations, request, init, &AsyncHooks::default()).await
}

/// A lifecycle hook of the async sign-up ([`claim_spare_with_hooks`]): the
/// async counterpart of `appschema::provision::TenantHook::after_create`,
/// with the same contract. It runs once the spare is the tenant's, in the
/// creating transaction, on the connection with its `search_path` set to
/// `"<tenant schema>", public` (restored afterwards); an error rolls the
/// creation back and fails it with [`ProvisionError::Hook`].
///
/// ```no_run
/// use appschema::async_pool::{AsyncTenantHook, HookFuture};
/// use appschema::registry::Tenant;
/// use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
///
/// struct FirstAccount;
///
/// impl AsyncTenantHook for FirstAccount {
///     fn name(&self) -> &str {
///         "first-account"
///     }
///     fn after_create<'a>(&'a self, conn: &'a mut AsyncPgConnection, _: &'a Tenant) -> HookFuture<'a> {
///         Box::pin(async move {
///             conn.batch_execute("INSERT INTO account (display_name) VALUES ('owner')").await?;
///             Ok(())
///         })
///     }
/// }
/// ```
pub trait AsyncTenantHook: Send + Sync {
    /// The hook's name, used in errors.
    fn name(&self) -> &str;

    /// Runs after `tenant` was created, before the commit.
    fn after_create<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        tenant: &'a Tenant,
    ) -> HookFuture<'a>;
}

/// What [`AsyncTenantHook::after_create`] returns.
pub type HookFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), HookError>> + Send + 'a>>;

/// The async hooks a sign-up runs, in the order they were added. Cheap to
/// clone.
#[derive(Clone, Default)]
pub struct AsyncHooks(Vec<Arc<dyn AsyncTenantHook>>);

impl fmt::Debug for AsyncHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|h| h.name()))
            .finish()
    }
}

impl AsyncHooks {
    /// No hooks.
    pub fn new() -> AsyncHooks {
        AsyncHooks::default()
    }

    /// Adds `hook`.
    pub fn with(mut self, hook: impl AsyncTenantHook + 'static) -> AsyncHooks {
        self.0.push(Arc::new(hook));
        self
    }

    async fn run(
        &self,
        conn: &mut AsyncPgConnection,
        tenant: &Tenant,
    ) -> Result<(), ProvisionError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let run = HookRun::new(tenant, HookStage::AfterCreate);
        let saved = diesel::sql_query(HookRun::SAVE_PATH)
            .get_result::<TextRow>(conn)
            .await?
            .value;
        conn.batch_execute(&run.enter_sql()).await?;
        for hook in &self.0 {
            if let Err(error) = hook.after_create(conn, tenant).await {
                return Err(run.failed(hook.name(), error));
            }
        }
        diesel::sql_query(HookRun::RESTORE_PATH)
            .bind::<Text, _>(saved)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// [`claim_spare`], running `hooks` on the new tenant in the creating
/// transaction (see [`AsyncTenantHook`]). When it answers `Ok(None)` (no
/// spare left) the hooks did not run: the blocking fallback
/// (`create_tenant` with `NewTenant::hooks`) runs the blocking ones.
pub async fn claim_spare_with_hooks<M: IsolatedMigrations + ?Sized>(
    conn: &mut AsyncPgConnection,
    migrations: &M,
    request: &NewTenant,
    hooks: &AsyncHooks,
) -> Result<Option<Created>, ProvisionError> {
    claim(
        conn,
        migrations,
        request,
        |_, _| async { Ok(()) }.scope_boxed(),
        hooks,
    )
    .await
}

async fn claim<'a, M, F>(
    conn: &mut AsyncPgConnection,
    migrations: &M,
    request: &NewTenant,
    init: F,
    hooks: &AsyncHooks,
) -> Result<Option<Created>, ProvisionError>
where
    M: IsolatedMigrations + ?Sized,
    F: for<'r> FnOnce(
            &'r mut AsyncPgConnection,
            &'r Created,
        ) -> ScopedBoxFuture<'a, 'r, Result<(), diesel::result::Error>>
        + Send
        + 'a,
{
    if !request.hooks_ref().is_empty() {
        // Skipping them would create a tenant without what they write.
        return Err(ProvisionError::BlockingHooksOnAsyncPath {
            public_name: request.public_name().to_string(),
        });
    }
    let mut init = Some(init);
    let depth = AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .map_err(ProvisionError::Database)?;
    if depth.is_some() {
        return Err(ProvisionError::Database(
            diesel::result::Error::AlreadyInTransaction,
        ));
    }
    let _invalidate = InvalidateOnReturn;
    if let Some(schema) = request.schema_name() {
        let claim = SpareClaim::new(migrations, schema);
        return attempt(conn, request, &claim, &mut init, hooks).await;
    }
    for n in 0..MAX_DERIVED_ATTEMPTS {
        let schema = derived_candidate(request.public_name(), n);
        let claim = SpareClaim::new(migrations, &schema);
        match attempt(conn, request, &claim, &mut init, hooks).await {
            Err(e) if tries_next_name(&e) => continue,
            other => return other,
        }
    }
    Err(ProvisionError::NoFreeSchemaName {
        public_name: request.public_name().to_string(),
    })
}

/// Empties every resolver's cache when dropped: after the claim committed
/// or failed (as the sync `create_tenant` does).
struct InvalidateOnReturn;

impl Drop for InvalidateOnReturn {
    fn drop(&mut self) {
        appschema_core::resolve::invalidate_all();
    }
}

/// One try of `claim` (as its schema), in a transaction of its own:
/// committed when a spare at the head became the tenant and `init` succeeded on it,
/// rolled back otherwise. (A retry with another schema name follows only a
/// conflict, before `init` ran: it runs at most once.)
async fn attempt<'a, F>(
    conn: &mut AsyncPgConnection,
    request: &NewTenant,
    claim: &SpareClaim,
    init: &mut Option<F>,
    hooks: &AsyncHooks,
) -> Result<Option<Created>, ProvisionError>
where
    F: for<'r> FnOnce(
            &'r mut AsyncPgConnection,
            &'r Created,
        ) -> ScopedBoxFuture<'a, 'r, Result<(), diesel::result::Error>>
        + Send
        + 'a,
{
    AnsiTransactionManager::begin_transaction(conn)
        .await
        .map_err(ProvisionError::Database)?;
    let outcome = match claim_in_transaction(conn, request, claim).await {
        Ok(Some(created)) => {
            let initialized = match init.take() {
                Some(init) => init(conn, &created).await.map_err(ProvisionError::Database),
                None => Ok(()),
            };
            match initialized {
                Ok(()) => hooks
                    .run(conn, &created.tenant)
                    .await
                    .map(|()| Some(created)),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    match outcome {
        Ok(Some(created)) => {
            AnsiTransactionManager::commit_transaction(conn)
                .await
                .map_err(ProvisionError::Database)?;
            Ok(Some(created))
        }
        outcome => {
            // The work's error wins over a failed rollback's.
            let rollback = AnsiTransactionManager::rollback_transaction(conn).await;
            match (outcome, rollback) {
                (Err(e), _) => Err(e),
                (Ok(_), Err(e)) => Err(ProvisionError::Database(e)),
                (Ok(none), Ok(())) => Ok(none),
            }
        }
    }
}

async fn claim_in_transaction(
    conn: &mut AsyncPgConnection,
    request: &NewTenant,
    claim: &SpareClaim,
) -> Result<Option<Created>, ProvisionError> {
    let public_name = request.public_name();
    let schema = claim.schema();
    // The registry rows first: their unique indexes are where concurrent
    // sign-ups for the same name queue up and lose.
    let tenant = diesel::sql_query(format!(
        "{INSERT_TENANT} SELECT id, public_name, schema_name FROM tenant"
    ))
    .bind::<Text, _>(public_name.as_str())
    .bind::<Text, _>(schema.as_str())
    .get_result::<TenantRow>(conn)
    .await
    .map_err(|e| registry_conflict(e, public_name.as_str(), schema.as_str()))?
    .into_tenant()
    .map_err(ProvisionError::Database)?;
    // The claim's steps, as `SpareClaim` decides them.
    let mut answer = SpareAnswer::Start;
    loop {
        answer = match claim.next(answer)? {
            SpareStep::Take(sql) => SpareAnswer::Taken(
                diesel::sql_query(sql)
                    .get_result::<TextRow>(conn)
                    .await
                    .optional()
                    .map_err(ProvisionError::Database)?
                    .map(|row| row.value),
            ),
            SpareStep::Rename(sql) => SpareAnswer::Renamed(conn.batch_execute(&sql).await),
            SpareStep::CheckHead { sql, head } => SpareAnswer::AtHead(
                diesel::sql_query(sql)
                    .bind::<Text, _>(head)
                    .get_result::<BoolRow>(conn)
                    .await
                    .map_err(ProvisionError::Database)?
                    .value,
            ),
            SpareStep::Claimed => {
                return Ok(Some(Created {
                    tenant,
                    source: Source::Spare,
                }))
            }
            // No spare, or one behind a newer migration, which only the
            // blocking path can run: the caller rolls back and builds the
            // tenant there.
            SpareStep::NoneFree | SpareStep::Behind => return Ok(None),
        };
    }
}
