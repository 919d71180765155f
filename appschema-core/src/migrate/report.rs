//! What a run reports: progress events, failures, the final report, each
//! schema's status and the dry-run plan.

use std::time::Duration;

use crate::{Migration, Scope};

/// A migration that failed in one schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The schema.
    pub schema: String,
    /// The migration's directory name.
    pub migration: String,
    /// PostgreSQL's message.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema `{}`, migration {}: {}",
            self.schema, self.migration, self.message
        )
    }
}

impl Failure {
    /// `migration` failed in `schema` with PostgreSQL's `message`.
    pub(super) fn of(schema: &str, migration: &Migration, message: String) -> Failure {
        Failure {
            schema: schema.to_string(),
            migration: migration.name().to_string(),
            message,
        }
    }
}

/// What happened during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Schemas that had something applied.
    pub schemas_migrated: usize,
    /// (schema, migration) pairs applied.
    pub migrations_applied: usize,
    /// (schema, migration) pairs reverted: the `down.sql`s that ran
    /// ([`Migrator::revert`](super::Migrator::revert); 0 for `migrate`).
    pub migrations_reverted: usize,
    /// Every failure, in the order seen.
    pub failures: Vec<Failure>,
    /// Steps not started because an earlier step failed.
    pub steps_skipped: usize,
    /// Tenant schemas whose tracking table was read, because no recorded
    /// head vouched for them (none, with nothing pending and every head
    /// recorded).
    pub tracking_tables_read: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// Whether everything pending was applied.
    pub fn is_success(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Progress of a run, for progress bars and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A step starts. For an isolated step, `schemas` is an upper bound
    /// while the applied versions are still being read: each schema it
    /// counts is reported once, by [`Event::SchemaDone`] (with `applied: 0`
    /// for one found up to date) or [`Event::SchemaFailed`].
    StepStarted {
        /// `shared` or `isolated`.
        scope: Scope,
        /// The migrations of the step pending in the schemas known when it
        /// starts, by name, in order (an isolated step's schemas are still
        /// being read then; those read later are usually at the same version).
        migrations: Vec<String>,
        /// Schemas that may have something to apply in this step.
        schemas: usize,
    },
    /// A schema finished its part of the step.
    SchemaDone {
        /// The schema.
        schema: String,
        /// Migrations applied to it.
        applied: usize,
    },
    /// A schema failed (it stops; others go on).
    SchemaFailed(Failure),
    /// Another run holds the schema's lock; this run waits for it.
    Waiting {
        /// The schema.
        schema: String,
    },
}

impl Event {
    /// The event ending one schema's part of a step: [`Event::SchemaFailed`]
    /// with its failure, else [`Event::SchemaDone`] with the number of
    /// migrations it applied (or reverted).
    pub(super) fn schema_finished(schema: &str, count: usize, failure: Option<&Failure>) -> Event {
        match failure {
            Some(f) => Event::SchemaFailed(f.clone()),
            None => Event::SchemaDone {
                schema: schema.to_string(),
                applied: count,
            },
        }
    }
}

/// What one schema has applied and has pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// The schema.
    pub schema: String,
    /// The tenant's public name; `None` for the shared schema and extra schemas.
    pub tenant: Option<String>,
    /// Which migrations apply to it.
    pub scope: Scope,
    /// Versions recorded in its tracking table, in order.
    pub applied: Vec<String>,
    /// Migrations of its scope not applied yet, by name, in order.
    pub pending: Vec<String>,
    /// Migrations of the *other* scope recorded in its tracking table, by
    /// name: an isolated migration recorded in the shared schema was run
    /// there by hand (`diesel migration run` applies every migration to
    /// `public`), and its tables sit in the wrong schema.
    pub misplaced: Vec<String>,
}

/// One planned application: a migration and the schemas it will run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMigration {
    /// The migration's directory name.
    pub migration: String,
    /// Its scope.
    pub scope: Scope,
    /// The schemas, in the order they are handed to workers.
    pub schemas: Vec<String>,
}

impl PlannedMigration {
    /// `migration` planned in `schemas`; `None` when there are none.
    pub(super) fn of(migration: &Migration, schemas: Vec<String>) -> Option<PlannedMigration> {
        (!schemas.is_empty()).then(|| PlannedMigration {
            migration: migration.name().to_string(),
            scope: migration.scope(),
            schemas,
        })
    }
}
