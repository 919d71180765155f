//! Spreading tenants over the nodes by size: the plan of moves.

use std::collections::{BTreeMap, HashMap};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use super::placement::{citus_placements, nodes};
use super::{is_citus, CitusError, NodeAddr, Placement};

/// One move of a [`rebalance_plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMove {
    /// The tenant's primary public name (what [`move_tenant`](super::move_tenant) takes).
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
/// with [`move_tenant`](super::move_tenant) (`appschema-cli rebalance` does).
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
}
