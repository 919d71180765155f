//! appschema on a Citus cluster (schema-based sharding, Citus 12+).
//!
//! When the database has the `citus` extension (checked by the operation
//! itself; nothing to configure), every tenant schema appschema creates —
//! by migrations, by template replay, as a spare — is a *distributed
//! schema*: its tables live together on one worker node, and the
//! coordinator routes each query there by `search_path`. The application
//! does not change: it connects to the coordinator as before, and tenant
//! connections, migrations across tenants, drop, archive, rename and clone
//! work as on one server.
//!
//! What Citus adds, and what this module offers for it:
//!
//! - a tenant table may reference, besides its own schema's tables, only
//!   **reference tables** (shared tables copied to every node):
//!   [`ensure_reference_tables`] makes the shared tables the isolated
//!   migrations reference into reference tables (`appschema-cli migrate`
//!   does this by itself, from the planner's list, after each shared
//!   migration);
//! - where a tenant lives: [`placements`], shown by `appschema-cli status`
//!   and `list --json`;
//! - moving a tenant to another node: [`move_tenant`], choosing the
//!   transfer mode its tables allow (`appschema-cli move`); spreading
//!   tenants by size: [`rebalance_plan`].
//!
//! ```no_run
//! # use diesel::Connection;
//! use appschema::citus::{self, NodeAddr, TransferMode};
//! use appschema::PublicName;
//! let mut conn = diesel::PgConnection::establish("postgres:///app").unwrap();
//! if citus::is_citus(&mut conn)? {
//!     let to: NodeAddr = "10.0.0.7:5432".parse()?;
//!     let moved = citus::move_tenant(&mut conn, &PublicName::new("acme.example.com")?, &to, TransferMode::Auto)?;
//!     println!("{} moved from {} to {} in {:?}", moved.schema, moved.from, moved.to, moved.elapsed);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// One concern per module; the public items are re-exported here, so paths
// stay `citus::…`.
mod moving;
mod placement;
mod rebalance;
mod reference;
mod script;

use std::fmt;
use std::str::FromStr;

use diesel::prelude::*;
use diesel::sql_types::Bool;

pub use moving::{move_tenant, Moved, TransferMode};
pub use placement::{nodes, placements, placements_by_schema, Placement};
pub use rebalance::{rebalance_plan, PlannedMove};
pub use reference::ensure_reference_tables;
pub(crate) use script::{distribute_new_schema_sql, distributing, execute_script};

/// Why a Citus operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CitusError {
    /// The database has no `citus` extension.
    #[error("this database is not a Citus coordinator (no `citus` extension): placing and moving tenants needs Citus; see the README's \"Scaling out with Citus\"")]
    NotCitus,
    /// No tenant has this public name.
    #[error("no tenant is named `{public_name}`: check the name with `appschema-cli list`")]
    UnknownTenant {
        /// The name asked for.
        public_name: String,
    },
    /// The tenant's schema is not a distributed schema.
    #[error("schema `{schema}` is not a distributed schema (created before Citus was set up?): distribute it with `SELECT citus_schema_distribute('{schema}')`")]
    NotDistributed {
        /// The tenant's schema.
        schema: String,
    },
    /// The tenant's schema has no table, so no node holds it yet.
    #[error("schema `{schema}` has no table yet, so no node holds it: nothing to move")]
    NoPlacement {
        /// The tenant's schema.
        schema: String,
    },
    /// The target is not an active worker of the cluster.
    #[error("`{node}` is not an active node of this cluster; the nodes are: {known}")]
    UnknownNode {
        /// The node asked for.
        node: String,
        /// The cluster's nodes.
        known: String,
    },
    /// A node address that is not `HOST:PORT`.
    #[error("`{0}` is not a node address: give HOST:PORT (e.g. 10.0.0.7:5432)")]
    BadNodeAddr(String),
    /// A shared table could not be made a reference table.
    #[error("shared table `{table}` must be a reference table on Citus (isolated tables reference it) but `create_reference_table` failed: {error}; fix what it names, then run `SELECT create_reference_table('{table}')` or `appschema-cli migrate` again")]
    ReferenceTable {
        /// The table.
        table: String,
        /// Citus's error.
        error: diesel::result::Error,
    },
    /// Any other database error.
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// A node of the cluster: host (or unix socket directory) and port, as in
/// `pg_dist_node`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr {
    /// `nodename`: a host name, an address, or a socket directory.
    pub host: String,
    /// `nodeport`.
    pub port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for NodeAddr {
    type Err = CitusError;
    /// `HOST:PORT` (the last `:` splits, so a socket directory works).
    ///
    /// ```
    /// let n: appschema::citus::NodeAddr = "10.0.0.7:5432".parse().unwrap();
    /// assert_eq!((n.host.as_str(), n.port), ("10.0.0.7", 5432));
    /// assert!("10.0.0.7".parse::<appschema::citus::NodeAddr>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<NodeAddr, CitusError> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| CitusError::BadNodeAddr(s.to_string()))?;
        let port = port
            .parse()
            .map_err(|_| CitusError::BadNodeAddr(s.to_string()))?;
        if host.is_empty() {
            return Err(CitusError::BadNodeAddr(s.to_string()));
        }
        Ok(NodeAddr {
            host: host.to_string(),
            port,
        })
    }
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    value: bool,
}

/// Whether the connected database has the `citus` extension (is a Citus
/// coordinator, for appschema's purposes).
pub fn is_citus(conn: &mut PgConnection) -> QueryResult<bool> {
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') AS value",
    )
    .get_result::<Flag>(conn)
    .map(|r| r.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_parse_hosts_and_socket_directories() {
        let n: NodeAddr = "/tmp/appschema-pg-x:5432".parse().unwrap();
        assert_eq!(n.host, "/tmp/appschema-pg-x");
        assert!("host:".parse::<NodeAddr>().is_err());
        assert!(":5432".parse::<NodeAddr>().is_err());
        assert!("host:99999".parse::<NodeAddr>().is_err());
    }
}
