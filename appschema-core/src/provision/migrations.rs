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
    fn migrate_schema(
        &self,
        conn: &mut PgConnection,
        schema: &SchemaName,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        (**self).migrate_schema(conn, schema)
    }
}

impl IsolatedMigrations for crate::planner::MigrationSet {
    fn versions(&self) -> Vec<String> {
        self.isolated().map(|m| m.version().to_string()).collect()
    }

    fn head(&self) -> Option<String> {
        self.isolated_head().map(String::from)
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

/// `CREATE SCHEMA` then the isolated migrations, in the open transaction.
pub(crate) fn migrate_new_schema<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    schema: &SchemaName,
) -> Result<(), ProvisionError> {
    schema_ddl(conn, &format!("CREATE SCHEMA {}", schema.quoted()), schema)?;
    migrations
        .migrate_schema(conn, schema)
        .map_err(|source| ProvisionError::Migration {
            schema: schema.to_string(),
            source,
        })
}
