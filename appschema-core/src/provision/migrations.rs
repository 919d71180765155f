//! What provisioning needs from the isolated migrations, and building a
//! new schema with them.

use diesel::PgConnection;

use super::error::ProvisionError;
use super::util::schema_ddl;
use crate::name::SchemaName;

/// The isolated migrations, as provisioning sees them: their versions, the
/// head, and a way to bring one schema to the head inside the caller's
/// transaction. [`crate::MigrationSet`] implements it; an
/// application may implement it for its own migrations.
pub trait IsolatedMigrations {
    /// Every isolated migration version, in the order applied.
    fn versions(&self) -> Vec<String>;

    /// The last isolated version, or `None` when there are none.
    fn head(&self) -> Option<String> {
        self.versions().pop()
    }

    /// The shared migrations' versions, in order: when building a schema
    /// fails, provisioning checks whether the shared schema lags behind them
    /// (the tenant's migrations may need its tables) and says to run
    /// `migrate` first. Default: none known.
    fn shared_versions(&self) -> Vec<String> {
        Vec::new()
    }

    /// Brings `schema` (which exists) to the head inside the caller's open
    /// transaction, creating and filling its `__diesel_schema_migrations`.
    /// Must not commit. May change the transaction's `search_path`.
    fn migrate_schema(
        &self,
        conn: &mut PgConnection,
        schema: &SchemaName,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

impl<T: IsolatedMigrations + ?Sized> IsolatedMigrations for &T {
    fn versions(&self) -> Vec<String> {
        (**self).versions()
    }
    fn head(&self) -> Option<String> {
        (**self).head()
    }
    fn shared_versions(&self) -> Vec<String> {
        (**self).shared_versions()
    }
    fn migrate_schema(
        &self,
        conn: &mut PgConnection,
        schema: &SchemaName,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        (**self).migrate_schema(conn, schema)
    }
}

impl IsolatedMigrations for crate::MigrationSet {
    fn versions(&self) -> Vec<String> {
        self.isolated().map(|m| m.version().to_string()).collect()
    }

    fn head(&self) -> Option<String> {
        self.isolated_head().map(String::from)
    }

    fn shared_versions(&self) -> Vec<String> {
        self.shared().map(|m| m.version().to_string()).collect()
    }

    fn migrate_schema(
        &self,
        conn: &mut PgConnection,
        schema: &SchemaName,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        crate::migrate::migrate_schema_in_transaction(conn, schema, self)
            .map(drop)
            .map_err(Into::into)
    }
}

/// `CREATE SCHEMA` (a distributed schema on Citus) then the isolated
/// migrations, in the open transaction.
pub(crate) fn migrate_new_schema<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    schema: &SchemaName,
) -> Result<(), ProvisionError> {
    let create = format!(
        "CREATE SCHEMA {};\n{}",
        schema.quoted(),
        crate::citus::distribute_new_schema_sql(schema)
    );
    schema_ddl(conn, &create, schema)?;
    migrations
        .migrate_schema(conn, schema)
        .map_err(|error| ProvisionError::Migration {
            schema: schema.to_string(),
            error,
        })
}

/// Why building a schema failed, with a hint when the shared schema lags
/// behind the shared migrations: `error` wrapped in
/// [`ProvisionError::SharedBehind`] then. Runs after the failed transaction
/// (or savepoint) was rolled back.
pub(crate) fn explain_failure<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    error: ProvisionError,
) -> ProvisionError {
    if !matches!(
        error,
        ProvisionError::Migration { .. }
            | ProvisionError::Database(_)
            | ProvisionError::Template(_)
    ) {
        return error;
    }
    let shared = migrations.shared_versions();
    if shared.is_empty() {
        return error;
    }
    let applied = match applied_shared_versions(conn) {
        Ok(applied) => applied,
        Err(_) => return error,
    };
    let pending: Vec<String> = shared
        .into_iter()
        .filter(|v| !applied.contains(v))
        .collect();
    match pending.first() {
        None => error,
        Some(first) => ProvisionError::SharedBehind {
            pending: pending.len(),
            first: first.clone(),
            error: Box::new(error),
        },
    }
}

/// The versions recorded in `public.__diesel_schema_migrations` (none when
/// it does not exist).
pub(crate) fn applied_shared_versions(
    conn: &mut PgConnection,
) -> diesel::QueryResult<std::collections::BTreeSet<String>> {
    use diesel::RunQueryDsl;
    let exists = diesel::sql_query(
        "SELECT to_regclass('public.__diesel_schema_migrations') IS NOT NULL AS value",
    )
    .get_result::<super::util::BoolRow>(conn)?
    .value;
    if !exists {
        return Ok(Default::default());
    }
    Ok(
        diesel::sql_query("SELECT version::text AS value FROM public.__diesel_schema_migrations")
            .load::<super::util::TextRow>(conn)?
            .into_iter()
            .map(|r| r.value)
            .collect(),
    )
}
