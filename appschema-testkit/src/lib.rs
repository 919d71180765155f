//! The test helpers appschema's own test suites share; unpublished
//! (`publish = false`), a dev-dependency of the workspace's crates only.
//!
//! What goes here: set-up and probes that more than one test file needs,
//! above all those the sync and the async twin of a suite share (the
//! tenant schemas both pools are checked against, the session-hygiene
//! attacks, killing a backend mid-statement). A helper one test file uses
//! stays in that file. Nothing here is API: names and signatures change
//! with the tests.
//!
//! | module | for |
//! |---|---|
//! | [`tenants`] | tenant schemas `t0`, `t1`, … whose `items` row 1 names its schema, [`tenants::whoami`], a database behind PgBouncer |
//! | [`provisioning`] | the provisioning tests' application migrations, catalog snapshots, concurrent creations |
//! | [`lost`] | killing a backend at a chosen moment, and the set-up the lost-connection suites (sync, async, scoped) share |
//! | [`attacks`] | the session-hygiene attacks, written once for every pool |
//! | `async_conn` (feature `async`) | a tokio runtime and the [`tenants`] probes on an `AsyncPgConnection` |
//! | `history` (feature `planner`) | the planner's real-history fixtures, normalized dumps, diffs |
//! | `cli` (feature `cli`) | a temp project with marked migrations, the real `appschema-cli` binary |
//!
//! The crate depends on appschema-core, which dev-depends on it: cargo
//! builds appschema-core once and links that one library into both its
//! integration tests and this crate, so the types match. (appschema-core's
//! unit tests, compiled as a second copy of the library, cannot use it.)
//!
//! ```
//! let schema = appschema_testkit::tenants::tenant(3);
//! assert_eq!(schema.as_str(), "t3");
//! ```

pub mod attacks;
pub mod lost;
pub mod provisioning;
pub mod tenants;

#[cfg(feature = "async")]
pub mod async_conn;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "planner")]
pub mod history;
