//! What a run across tenants reports: progress events and the final report.

use std::time::Duration;

/// A tenant whose work failed (it was rolled back; the others went on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The tenant's primary public name.
    pub tenant: String,
    /// Its schema.
    pub schema: String,
    /// The work's error (PostgreSQL's message for SQL).
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tenant `{}` (schema `{}`): {}",
            self.tenant, self.schema, self.message
        )
    }
}

/// What happened during a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Tenants whose work succeeded (and committed).
    pub tenants_done: usize,
    /// Every tenant whose work failed, in the order seen.
    pub failures: Vec<Failure>,
    /// Wall time, connecting and reading the registry included.
    pub elapsed: Duration,
}

impl Report {
    /// Whether every tenant's work succeeded.
    pub fn is_success(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Progress of a run (sent from worker threads), for progress bars and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The tenants were read; work starts on this many.
    Started {
        /// How many tenants the work goes to.
        tenants: usize,
    },
    /// A tenant's work succeeded.
    TenantDone {
        /// The tenant's primary public name.
        tenant: String,
        /// Its schema.
        schema: String,
    },
    /// A tenant's work failed and was rolled back.
    TenantFailed(Failure),
}
