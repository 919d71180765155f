//! Moving a tenant to another node (`citus_schema_move`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};

use super::placement::{citus_placements, nodes};
use super::{is_citus, CitusError, NodeAddr};
use crate::name::{PublicName, SchemaName};

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
