//! Where tenants live: the node holding each distributed schema, and the
//! nodes that can hold tenants.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

use super::{is_citus, NodeAddr};

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
pub(super) fn citus_placements(conn: &mut PgConnection) -> QueryResult<Vec<Placement>> {
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
