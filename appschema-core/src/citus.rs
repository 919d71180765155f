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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Text};

use crate::name::{quote_ident, PublicName, SchemaName};

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

/// SQL to append to a `CREATE SCHEMA` of a tenant schema, in the same
/// message and transaction: on Citus it makes the new (empty) schema a
/// distributed schema, so that every table created in it afterwards is
/// distributed with it; elsewhere it does nothing. A `DO` block, so that
/// the Citus function is only looked up where Citus is installed, and the
/// check costs no round trip of its own. The schema's quoted name goes in
/// as a string literal: a validated, double-quoted identifier holds neither
/// `'` nor `$`.
pub(crate) fn distribute_new_schema_sql(schema: &SchemaName) -> String {
    format!(
        "DO $appschema$ BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension \
         WHERE extname = 'citus') THEN PERFORM citus_schema_distribute('{}'); \
         END IF; END $appschema$;\n",
        schema.quoted()
    )
}

/// `sql`, which starts with `CREATE SCHEMA <schema>;\n` (a template replay,
/// an import), with [`distribute_new_schema_sql`] right after that first
/// statement: the replay for a Citus coordinator.
pub(crate) fn distributing(sql: &str, schema: &SchemaName) -> String {
    sql.replacen(
        ";\n",
        &format!(";\n{}", distribute_new_schema_sql(schema)),
        1,
    )
}

/// Runs `sql` (any number of statements) as one message, or, when
/// `one_by_one` (on Citus), statement by statement: Citus refuses DDL on
/// distributed tables inside a multi-statement message ("cannot insert
/// multiple commands into a prepared statement"). Either way the first
/// error stops it; a transaction the script opened is then left aborted,
/// as with a single message.
pub(crate) fn execute_script(
    conn: &mut PgConnection,
    sql: &str,
    one_by_one: bool,
) -> QueryResult<()> {
    use diesel::connection::SimpleConnection;
    if !one_by_one {
        return conn.batch_execute(sql);
    }
    let statements = crate::provision::sqltok::split_statements(sql).map_err(|e| {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new(format!("cannot split the SQL into statements: {e}")),
        )
    })?;
    for statement in statements {
        conn.batch_execute(statement)?;
    }
    Ok(())
}

/// Makes every table of `tables` (names in `schema`, the shared schema)
/// that exists and is not yet a reference table into one, and returns the
/// ones it converted. Tables that do not exist (yet) are skipped. Does
/// nothing and returns nothing when the database is not on Citus.
///
/// A tenant table may only reference its own schema's tables or reference
/// tables; this is what keeps the isolated migrations' foreign keys to
/// shared tables working on Citus.
pub fn ensure_reference_tables(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[String],
) -> Result<Vec<String>, CitusError> {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = Text)]
        value: String,
    }
    if tables.is_empty() || !is_citus(conn)? {
        return Ok(Vec::new());
    }
    let missing = diesel::sql_query(
        "SELECT c.oid::regclass::text AS value
           FROM (SELECT DISTINCT name FROM unnest($1::text[]) AS u(name)) AS t
           JOIN pg_catalog.pg_class c
             ON c.relname = t.name AND c.relnamespace = $2::regnamespace
            AND c.relkind IN ('r', 'p')
          WHERE NOT EXISTS (SELECT 1 FROM pg_dist_partition p
                             WHERE p.logicalrelid = c.oid AND p.partmethod = 'n'
                               AND p.repmodel = 't')
          ORDER BY c.oid",
    )
    .bind::<Array<Text>, _>(tables)
    .bind::<Text, _>(quote_ident(schema))
    .load::<Name>(conn)?;
    let mut converted = Vec::new();
    for Name { value: table } in missing {
        diesel::sql_query("SELECT create_reference_table($1::regclass)::text")
            .bind::<Text, _>(&table)
            .execute(conn)
            .map_err(|error| CitusError::ReferenceTable {
                table: table.clone(),
                error,
            })?;
        converted.push(table);
    }
    Ok(converted)
}

/// Where one distributed schema's tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The schema.
    pub schema: String,
    /// The node holding its tables.
    pub node: NodeAddr,
}

#[derive(QueryableByName)]
struct PlacementRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    host: String,
    #[diesel(sql_type = Integer)]
    port: i32,
}

/// Every distributed schema that has tables, with the node holding them
/// (from Citus's catalogs on the coordinator: one query, no node
/// contacted). Empty when the database is not on Citus.
pub fn placements(conn: &mut PgConnection) -> QueryResult<Vec<Placement>> {
    if !is_citus(conn)? {
        return Ok(Vec::new());
    }
    citus_placements(conn)
}

/// [`placements`] on a database known to be on Citus.
fn citus_placements(conn: &mut PgConnection) -> QueryResult<Vec<Placement>> {
    let rows = diesel::sql_query(
        "SELECT DISTINCT ON (s.schemaid) s.schemaid::regnamespace::text AS schema,
                n.nodename::text AS host, n.nodeport AS port
           FROM pg_dist_schema s
           JOIN pg_dist_partition p ON p.colocationid = s.colocationid
           JOIN pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid
           JOIN pg_dist_placement pl ON pl.shardid = sh.shardid
           JOIN pg_dist_node n ON n.groupid = pl.groupid AND n.noderole = 'primary'
          ORDER BY s.schemaid, p.logicalrelid",
    )
    .load::<PlacementRow>(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| Placement {
            schema: r.schema.trim_matches('"').to_string(),
            node: NodeAddr {
                host: r.host,
                port: r.port as u16,
            },
        })
        .collect())
}

/// The placements of [`placements`] by schema name.
pub fn placements_by_schema(conn: &mut PgConnection) -> QueryResult<BTreeMap<String, NodeAddr>> {
    Ok(placements(conn)?
        .into_iter()
        .map(|p| (p.schema, p.node))
        .collect())
}

/// The active primary nodes that can hold tenants (workers, and the
/// coordinator if it was told to hold shards).
pub fn nodes(conn: &mut PgConnection) -> QueryResult<Vec<NodeAddr>> {
    #[derive(QueryableByName)]
    struct NodeRow {
        #[diesel(sql_type = Text)]
        host: String,
        #[diesel(sql_type = Integer)]
        port: i32,
    }
    Ok(diesel::sql_query(
        "SELECT nodename::text AS host, nodeport AS port
           FROM pg_dist_node
          WHERE isactive AND noderole = 'primary' AND shouldhaveshards
          ORDER BY nodeid",
    )
    .load::<NodeRow>(conn)?
    .into_iter()
    .map(|r| NodeAddr {
        host: r.host,
        port: r.port as u16,
    })
    .collect())
}

/// How [`move_tenant`] copies a tenant's tables to the other node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TransferMode {
    /// Logical replication when every table of the schema has a primary key
    /// or a replica identity (writes continue during the copy and are
    /// blocked only for the final switch-over), otherwise block writes.
    #[default]
    Auto,
    /// Logical replication (`force_logical`); tables without a primary key
    /// or replica identity then reject `UPDATE`/`DELETE` during the move.
    Logical,
    /// Block writes to the tenant's tables for the whole copy
    /// (`block_writes`); works for every table.
    BlockWrites,
}

impl TransferMode {
    /// Citus's name for the mode actually used.
    fn citus_name(self) -> &'static str {
        match self {
            TransferMode::Auto | TransferMode::Logical => "force_logical",
            TransferMode::BlockWrites => "block_writes",
        }
    }

    /// The CLI's name: `auto`, `logical` or `block-writes`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferMode::Auto => "auto",
            TransferMode::Logical => "logical",
            TransferMode::BlockWrites => "block-writes",
        }
    }
}

impl FromStr for TransferMode {
    type Err = String;
    fn from_str(s: &str) -> Result<TransferMode, String> {
        match s {
            "auto" => Ok(TransferMode::Auto),
            "logical" => Ok(TransferMode::Logical),
            "block-writes" => Ok(TransferMode::BlockWrites),
            _ => Err(format!(
                "unknown transfer mode `{s}`: use auto, logical or block-writes"
            )),
        }
    }
}

impl fmt::Display for TransferMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`move_tenant`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The tenant's schema.
    pub schema: String,
    /// Where it was.
    pub from: NodeAddr,
    /// Where it is now.
    pub to: NodeAddr,
    /// The mode used (never [`TransferMode::Auto`]).
    pub mode: TransferMode,
    /// How long the move took.
    pub elapsed: Duration,
}

/// Moves tenant `tenant` (any of its public names) to node `to` with
/// `citus_schema_move`: all its tables together, its registry rows
/// untouched (the coordinator keeps routing by `search_path`). Moving to
/// the node it is on already is a no-op reported with a zero duration.
///
/// With [`TransferMode::Auto`], logical replication is used when every
/// table has a primary key or a replica identity (writes go on during the
/// copy), else writes are blocked for the copy.
pub fn move_tenant(
    conn: &mut PgConnection,
    tenant: &PublicName,
    to: &NodeAddr,
    mode: TransferMode,
) -> Result<Moved, CitusError> {
    if !is_citus(conn)? {
        return Err(CitusError::NotCitus);
    }
    let found = crate::registry::find(conn, tenant)?.ok_or_else(|| CitusError::UnknownTenant {
        public_name: tenant.to_string(),
    })?;
    let schema = found.schema_name;
    let from = placement_of(conn, &schema)?;
    let known = nodes(conn)?;
    if !known.contains(to) {
        return Err(CitusError::UnknownNode {
            node: to.to_string(),
            known: known
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mode = match mode {
        TransferMode::Auto if tables_without_replica_identity(conn, &schema)? > 0 => {
            TransferMode::BlockWrites
        }
        TransferMode::Auto => TransferMode::Logical,
        other => other,
    };
    let started = Instant::now();
    if from != *to {
        diesel::sql_query(
            "SELECT citus_schema_move($1::regnamespace, $2, $3, $4::citus.shard_transfer_mode)::text",
        )
        .bind::<Text, _>(schema.quoted())
        .bind::<Text, _>(&to.host)
        .bind::<Integer, _>(i32::from(to.port))
        .bind::<Text, _>(mode.citus_name())
        .execute(conn)?;
    }
    Ok(Moved {
        schema: schema.to_string(),
        to: to.clone(),
        mode,
        elapsed: if from == *to {
            Duration::ZERO
        } else {
            started.elapsed()
        },
        from,
    })
}

fn placement_of(conn: &mut PgConnection, schema: &SchemaName) -> Result<NodeAddr, CitusError> {
    #[derive(QueryableByName)]
    struct Distributed {
        #[diesel(sql_type = Bool)]
        value: bool,
    }
    let distributed = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_schema WHERE schemaid = $1::regnamespace) AS value",
    )
    .bind::<Text, _>(schema.quoted())
    .get_result::<Distributed>(conn)?
    .value;
    if !distributed {
        return Err(CitusError::NotDistributed {
            schema: schema.to_string(),
        });
    }
    citus_placements(conn)?
        .into_iter()
        .find(|p| p.schema == schema.as_str())
        .map(|p| p.node)
        .ok_or_else(|| CitusError::NoPlacement {
            schema: schema.to_string(),
        })
}

/// How many tables of `schema` logical replication cannot move without
/// blocking their updates: no primary key and replica identity `default`,
/// or replica identity `nothing`.
fn tables_without_replica_identity(
    conn: &mut PgConnection,
    schema: &SchemaName,
) -> QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        value: i64,
    }
    diesel::sql_query(
        "SELECT count(*) AS value FROM pg_catalog.pg_class c
          WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p')
            AND (c.relreplident = 'n'
                 OR (c.relreplident = 'd' AND NOT EXISTS (
                       SELECT 1 FROM pg_catalog.pg_index i
                        WHERE i.indrelid = c.oid AND i.indisprimary)))",
    )
    .bind::<Text, _>(schema.quoted())
    .get_result::<Count>(conn)
    .map(|r| r.value)
}

/// One move of a [`rebalance_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    /// The tenant's primary public name (what [`move_tenant`] takes).
    pub tenant: String,
    /// The tenant's schema.
    pub schema: String,
    /// Its size in bytes.
    pub bytes: i64,
    /// Where it is.
    pub from: NodeAddr,
    /// Where it should go.
    pub to: NodeAddr,
}

/// Moves that spread the tenants' bytes more evenly over the nodes (spare
/// and archived schemas are left where they are):
/// repeatedly, the largest tenant on the fullest node that fits moves to the
/// emptiest node, as long as that narrows the gap between the two. Sizes
/// are the tables' total sizes (`citus_total_relation_size`, which asks the
/// node holding each). Carry the plan out
/// with [`move_tenant`] (`appschema-cli rebalance` does).
pub fn rebalance_plan(conn: &mut PgConnection) -> Result<Vec<PlannedMove>, CitusError> {
    #[derive(QueryableByName)]
    struct Size {
        #[diesel(sql_type = Text)]
        schema: String,
        #[diesel(sql_type = BigInt)]
        bytes: i64,
    }
    if !is_citus(conn)? {
        return Err(CitusError::NotCitus);
    }
    let sizes: BTreeMap<String, i64> = diesel::sql_query(
        "SELECT n.nspname::text AS schema,
                coalesce(sum(citus_total_relation_size(p.logicalrelid)), 0)::bigint AS bytes
           FROM pg_dist_schema s
           JOIN pg_catalog.pg_namespace n ON n.oid = s.schemaid
           LEFT JOIN pg_dist_partition p ON p.colocationid = s.colocationid
          GROUP BY n.nspname",
    )
    .load::<Size>(conn)?
    .into_iter()
    .map(|s| (s.schema, s.bytes))
    .collect();
    let tenants: HashMap<String, String> = crate::registry::list(conn)?
        .into_iter()
        .map(|t| (t.schema_name.to_string(), t.public_name))
        .collect();
    let placements = citus_placements(conn)?;
    let nodes = nodes(conn)?;
    Ok(plan_moves(&nodes, &placements, &tenants, &sizes))
}

/// The greedy spreading of [`rebalance_plan`], on given sizes, for the
/// schemas in `tenants` (schema → public name) only: spares and archives
/// stay where they are.
fn plan_moves(
    nodes: &[NodeAddr],
    placements: &[Placement],
    tenants: &HashMap<String, String>,
    sizes: &BTreeMap<String, i64>,
) -> Vec<PlannedMove> {
    let mut load: BTreeMap<&NodeAddr, i64> = nodes.iter().map(|n| (n, 0)).collect();
    let mut on: Vec<(String, i64, NodeAddr)> = placements
        .iter()
        .filter(|p| load.contains_key(&p.node) && tenants.contains_key(&p.schema))
        .map(|p| {
            let bytes = sizes.get(&p.schema).copied().unwrap_or(0);
            (p.schema.clone(), bytes, p.node.clone())
        })
        .collect();
    for (_, bytes, node) in &on {
        *load.get_mut(node).expect("filtered above") += bytes;
    }
    let mut moves = Vec::new();
    for _ in 0..on.len() {
        let (Some((&full, &full_load)), Some((&empty, &empty_load))) = (
            load.iter()
                .max_by_key(|(n, l)| (**l, std::cmp::Reverse(*n))),
            load.iter().min_by_key(|(n, l)| (**l, *n)),
        ) else {
            break;
        };
        let gap = full_load - empty_load;
        // The largest tenant on `full` whose move narrows the gap.
        let best = on
            .iter()
            .enumerate()
            // Moving `bytes` leaves a gap of |gap - 2 bytes|: narrower iff
            // 0 < bytes < gap.
            .filter(|(_, (_, bytes, node))| node == full && *bytes > 0 && *bytes < gap)
            .max_by_key(|(_, (schema, bytes, _))| (*bytes, std::cmp::Reverse(schema.clone())))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let (full, empty) = (full.clone(), empty.clone());
        let bytes = on[i].1;
        moves.push(PlannedMove {
            tenant: tenants[&on[i].0].clone(),
            schema: on[i].0.clone(),
            bytes,
            from: full.clone(),
            to: empty.clone(),
        });
        on[i].2 = empty.clone();
        *load.get_mut(&full).expect("a node") -= bytes;
        *load.get_mut(&empty).expect("a node") += bytes;
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u16) -> NodeAddr {
        NodeAddr {
            host: "w".into(),
            port: n,
        }
    }

    /// Every placement a tenant, named `<schema>.example`.
    fn as_tenants(placements: &[Placement]) -> HashMap<String, String> {
        placements
            .iter()
            .map(|p| (p.schema.clone(), format!("{}.example", p.schema)))
            .collect()
    }

    #[test]
    fn rebalancing_moves_the_largest_fitting_tenant_to_the_emptiest_node() {
        let nodes = [node(1), node(2)];
        let placements: Vec<Placement> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| Placement {
                schema: s.to_string(),
                node: node(1),
            })
            .collect();
        let sizes: BTreeMap<String, i64> = [("a", 50), ("b", 30), ("c", 15), ("d", 5)]
            .iter()
            .map(|(s, b)| (s.to_string(), *b))
            .collect();
        let tenants = as_tenants(&placements);
        let moves = plan_moves(&nodes, &placements, &tenants, &sizes);
        let moved: Vec<&str> = moves.iter().map(|m| m.schema.as_str()).collect();
        // 100 bytes on node 1: moving a (50) evens it out exactly.
        assert_eq!(moved, ["a"]);
        assert_eq!(moves[0].tenant, "a.example");
        assert!(moves.iter().all(|m| m.from == node(1) && m.to == node(2)));
    }

    #[test]
    fn a_balanced_cluster_needs_no_move() {
        let nodes = [node(1), node(2)];
        let placements = vec![
            Placement {
                schema: "a".into(),
                node: node(1),
            },
            Placement {
                schema: "b".into(),
                node: node(2),
            },
        ];
        let sizes: BTreeMap<String, i64> = [("a".to_string(), 10), ("b".to_string(), 12)]
            .into_iter()
            .collect();
        assert!(plan_moves(&nodes, &placements, &as_tenants(&placements), &sizes).is_empty());
    }

    #[test]
    fn node_addresses_parse_hosts_and_socket_directories() {
        let n: NodeAddr = "/tmp/appschema-pg-x:5432".parse().unwrap();
        assert_eq!(n.host, "/tmp/appschema-pg-x");
        assert!("host:".parse::<NodeAddr>().is_err());
        assert!(":5432".parse::<NodeAddr>().is_err());
        assert!("host:99999".parse::<NodeAddr>().is_err());
    }
}
