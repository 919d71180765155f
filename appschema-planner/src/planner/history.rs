//! The scope of every table the history ever had, not only those the schema
//! files still mark.
//!
//! The migrations are walked in the order diesel applies them, following each
//! table through its life: created, renamed (`packages` becomes `crates`),
//! indexed (so `DROP INDEX` and `ALTER INDEX` reach the index's table),
//! dropped (a later table of the same name is another table). Each table
//! then takes its scope from, in turn:
//!
//! - its marking in the schema files (by its last name);
//! - the other tables of a migration that touches it (a migration has one
//!   scope, so a single known scope among its tables is every table's);
//! - a migration's declared scope (`appschema_scope` in its metadata.toml);
//! - its foreign keys: a table referencing an isolated table is isolated
//!   (shared -> isolated is refused), a table a shared table references is
//!   shared;
//! - for views and materialized views, what they read: isolated if they
//!   read an isolated table, shared if everything they read is shared;
//!
//! repeated until nothing changes. The planner then decides each migration
//! from the scopes of what it touches.

use std::collections::{BTreeSet, HashMap};

use crate::schema_source::TableScopes;
use crate::sql::SqlFacts;
use crate::Scope;

/// One table (or view) over its life, under successive names.
#[derive(Debug)]
struct Node {
    /// Its last name.
    name: String,
    scope: Option<Scope>,
    /// For views: the relations its query reads.
    reads: Vec<usize>,
}

/// What one migration touches, resolved against the history.
#[derive(Debug, Default)]
pub(super) struct Touched {
    /// Each relation as written in the migration, with its node.
    relations: Vec<(String, usize)>,
    /// Indexes whose table the history does not know.
    pub(super) unknown_indexes: BTreeSet<String>,
    /// Foreign keys as written: (from, node, to, node).
    foreign_keys: Vec<(String, usize, String, usize)>,
    /// Tables triggers are created on, as written, with their node.
    triggers: Vec<(String, usize)>,
}

/// The history's tables and what each migration touches.
#[derive(Debug)]
pub(super) struct History {
    nodes: Vec<Node>,
    touched: Vec<Touched>,
}

/// The scopes of what a migration touches.
#[derive(Debug, Default)]
pub(super) struct Scopes {
    /// Shared relations, as written.
    pub(super) shared: BTreeSet<String>,
    /// Isolated relations, as written.
    pub(super) isolated: BTreeSet<String>,
    /// Relations of unknown scope, as written.
    pub(super) unknown: BTreeSet<String>,
}

impl History {
    /// Walks `migrations` (facts and declared scope, in diesel's order) and
    /// settles every table's scope.
    ///
    /// `default_scope` (the project's `appschema_default_scope`) also goes
    /// to tables nothing decides that no longer exist at the end of the
    /// history: created and dropped with no link to any other table, they
    /// leave the same schema whichever scope their migrations ran in.
    pub(super) fn new(
        migrations: &[(&SqlFacts, Option<Scope>)],
        marked: &TableScopes,
        default_scope: Option<Scope>,
    ) -> History {
        let mut walk = Walk::default();
        let touched: Vec<Touched> = migrations.iter().map(|(f, _)| walk.migration(f)).collect();
        let mut history = History {
            nodes: walk.nodes,
            touched,
        };
        history.mark(&walk.live, marked);
        history.settle(migrations);
        if let Some(scope) = default_scope {
            let live: BTreeSet<usize> = walk.live.values().copied().collect();
            let mut changed = false;
            for (n, node) in history.nodes.iter_mut().enumerate() {
                if node.scope.is_none() && !live.contains(&n) {
                    node.scope = Some(scope);
                    changed = true;
                }
            }
            if changed {
                history.settle(migrations);
            }
        }
        history
    }

    /// Applies the schema files' markings: to the table living under the
    /// marked name at the end of the history, else (a table the schema files
    /// still mark but a migration dropped) to the last table of that name.
    fn mark(&mut self, live: &HashMap<String, usize>, marked: &TableScopes) {
        for (name, table) in marked.iter() {
            let node = live
                .get(name)
                .copied()
                .or_else(|| self.nodes.iter().rposition(|n| n.name == name));
            if let Some(node) = node {
                self.nodes[node].scope = Some(table.scope);
            }
        }
    }

    fn settle(&mut self, migrations: &[(&SqlFacts, Option<Scope>)]) {
        loop {
            let mut changed = false;
            for (i, touched) in self.touched.iter().enumerate() {
                let known: BTreeSet<Scope> = touched
                    .relations
                    .iter()
                    .filter_map(|&(_, n)| self.nodes[n].scope)
                    .collect();
                let scope = match (migrations[i].1, known.len()) {
                    (Some(declared), _) => Some(declared),
                    (None, 1) => known.first().copied(),
                    _ => None,
                };
                for &(_, n) in &touched.relations {
                    if self.nodes[n].scope.is_none() && scope.is_some() {
                        self.nodes[n].scope = scope;
                        changed = true;
                    }
                }
                for &(_, from, _, to) in &touched.foreign_keys {
                    match (self.nodes[from].scope, self.nodes[to].scope) {
                        (None, Some(Scope::Isolated)) => {
                            self.nodes[from].scope = Some(Scope::Isolated);
                            changed = true;
                        }
                        (Some(Scope::Shared), None) => {
                            self.nodes[to].scope = Some(Scope::Shared);
                            changed = true;
                        }
                        _ => {}
                    }
                }
            }
            for v in 0..self.nodes.len() {
                if self.nodes[v].scope.is_some() || self.nodes[v].reads.is_empty() {
                    continue;
                }
                let read: Vec<Option<Scope>> = self.nodes[v]
                    .reads
                    .iter()
                    .map(|&r| self.nodes[r].scope)
                    .collect();
                let scope = if read.contains(&Some(Scope::Isolated)) {
                    Some(Scope::Isolated)
                } else if read.iter().all(|s| *s == Some(Scope::Shared)) {
                    Some(Scope::Shared)
                } else {
                    None
                };
                if scope.is_some() {
                    self.nodes[v].scope = scope;
                    changed = true;
                }
            }
            if !changed {
                return;
            }
        }
    }

    /// What migration `i` touches (including index owners), by scope.
    pub(super) fn scopes(&self, i: usize) -> Scopes {
        let mut out = Scopes::default();
        for (written, n) in &self.touched[i].relations {
            match self.nodes[*n].scope {
                Some(Scope::Shared) => out.shared.insert(written.clone()),
                Some(Scope::Isolated) => out.isolated.insert(written.clone()),
                None => out.unknown.insert(written.clone()),
            };
        }
        out
    }

    /// What migration `i` touches whose table the history cannot tell.
    pub(super) fn touched(&self, i: usize) -> &Touched {
        &self.touched[i]
    }

    /// Migration `i`'s foreign keys from a shared table to an isolated one.
    pub(super) fn shared_to_isolated(&self, i: usize) -> Vec<(String, String)> {
        self.touched[i]
            .foreign_keys
            .iter()
            .filter(|&&(_, from, _, to)| {
                self.nodes[from].scope == Some(Scope::Shared)
                    && self.nodes[to].scope == Some(Scope::Isolated)
            })
            .map(|(from, _, to, _)| (from.clone(), to.clone()))
            .collect()
    }

    /// Migration `i`'s foreign keys from an isolated table to a shared one:
    /// the shared table's name as written there (without its schema) and
    /// its last name.
    pub(super) fn isolated_to_shared(&self, i: usize) -> Vec<(String, String)> {
        self.touched[i]
            .foreign_keys
            .iter()
            .filter(|&&(_, from, _, to)| {
                self.nodes[from].scope == Some(Scope::Isolated)
                    && self.nodes[to].scope == Some(Scope::Shared)
            })
            .map(|(_, _, written, to)| {
                let written = written.rsplit('.').next().unwrap_or(written).to_string();
                (written, self.nodes[*to].name.clone())
            })
            .collect()
    }

    /// The isolated tables migration `i` creates triggers on, as written.
    pub(super) fn triggers_on_isolated(&self, i: usize) -> Vec<String> {
        self.touched[i]
            .triggers
            .iter()
            .filter(|&&(_, n)| self.nodes[n].scope == Some(Scope::Isolated))
            .map(|(written, _)| written.clone())
            .collect()
    }

    /// Whether migration `i` touches nothing at all (no relation, no index).
    pub(super) fn touches_nothing(&self, i: usize) -> bool {
        let t = &self.touched[i];
        t.relations.is_empty() && t.unknown_indexes.is_empty()
    }
}

/// The walk through the history in order.
#[derive(Debug, Default)]
struct Walk {
    nodes: Vec<Node>,
    /// The table living under each name now.
    live: HashMap<String, usize>,
    /// The table of each index living now.
    indexes: HashMap<String, usize>,
}

impl Walk {
    fn node(&mut self, name: &str) -> usize {
        if let Some(&n) = self.live.get(name) {
            return n;
        }
        self.nodes.push(Node {
            name: name.to_string(),
            scope: None,
            reads: Vec::new(),
        });
        let n = self.nodes.len() - 1;
        self.live.insert(name.to_string(), n);
        n
    }

    /// The table of index `name`: the one that created it, else a live table
    /// whose name PostgreSQL's generated index names start with
    /// (`<table>_pkey`, `<table>_<columns>_key`, `<table>_<columns>_idx`;
    /// the longest such table name wins).
    fn index_owner(&self, name: &str) -> Option<usize> {
        if let Some(&n) = self.indexes.get(name) {
            return Some(n);
        }
        let generated = ["_pkey", "_key", "_idx", "_excl"]
            .iter()
            .any(|suffix| name.ends_with(suffix));
        if !generated {
            return None;
        }
        self.live
            .iter()
            .filter(|(table, _)| {
                name.strip_prefix(table.as_str())
                    .is_some_and(|rest| rest.starts_with('_'))
            })
            .max_by_key(|(table, _)| table.len())
            .map(|(_, &n)| n)
    }

    fn migration(&mut self, facts: &SqlFacts) -> Touched {
        let mut out = Touched::default();
        let add = |out: &mut Touched, written: String, n: usize| {
            if !out.relations.contains(&(written.clone(), n)) {
                out.relations.push((written, n));
            }
        };
        for t in &facts.touched {
            let n = self.node(&t.name);
            add(&mut out, t.to_string(), n);
        }
        for (index, table) in &facts.indexes {
            let n = self.node(&table.name);
            self.indexes.insert(index.name.clone(), n);
        }
        for index in &facts.index_uses {
            match self.index_owner(&index.name) {
                Some(n) => {
                    let written = self.nodes[n].name.clone();
                    add(&mut out, written, n);
                }
                None => {
                    out.unknown_indexes.insert(index.to_string());
                }
            }
        }
        for (old, new) in &facts.index_renames {
            if let Some(n) = self.indexes.remove(&old.name) {
                self.indexes.insert(new.name.clone(), n);
            }
        }
        for table in &facts.triggers {
            let n = self.node(&table.name);
            out.triggers.push((table.to_string(), n));
        }
        for (from, to) in &facts.foreign_keys {
            let (f, t) = (self.node(&from.name), self.node(&to.name));
            out.foreign_keys
                .push((from.to_string(), f, to.to_string(), t));
        }
        for (view, read) in &facts.views {
            let v = self.node(&view.name);
            add(&mut out, view.to_string(), v);
            let reads: Vec<usize> = read
                .iter()
                .map(|r| self.node(&r.name))
                .filter(|&r| r != v)
                .collect();
            self.nodes[v].reads = reads;
        }
        for (old, new) in &facts.renames {
            let n = self.node(&old.name);
            self.live.remove(&old.name);
            self.live.insert(new.name.clone(), n);
            self.nodes[n].name = new.name.clone();
        }
        for dropped in &facts.dropped {
            if let Some(n) = self.live.remove(&dropped.name) {
                self.indexes.retain(|_, owner| *owner != n);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema_source::MarkedTable;
    use crate::sql::analyze;

    fn marked(isolated: &[&str], shared: &[&str]) -> TableScopes {
        let mut t = TableScopes::new();
        for (names, scope) in [(isolated, Scope::Isolated), (shared, Scope::Shared)] {
            for name in names {
                t.insert(
                    name.to_string(),
                    MarkedTable {
                        scope,
                        schema: None,
                        source: "schema.rs".into(),
                    },
                )
                .unwrap();
            }
        }
        t
    }

    fn scopes(sqls: &[&str], tables: &TableScopes) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
        let facts: Vec<SqlFacts> = sqls.iter().map(|s| analyze(s).unwrap()).collect();
        let input: Vec<(&SqlFacts, Option<Scope>)> = facts.iter().map(|f| (f, None)).collect();
        let h = History::new(&input, tables, None);
        (0..sqls.len())
            .map(|i| {
                let s = h.scopes(i);
                (
                    s.shared.into_iter().collect(),
                    s.isolated.into_iter().collect(),
                    s.unknown.into_iter().collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_renamed_table_takes_the_scope_of_its_last_name_from_creation_on() {
        let s = scopes(
            &[
                "CREATE TABLE packages (id int)",
                "ALTER TABLE packages RENAME TO crates",
            ],
            &marked(&["crates"], &[]),
        );
        assert_eq!(s[0].1, ["packages"]);
        assert_eq!(s[1].1, ["packages"]);
    }

    #[test]
    fn a_dropped_table_takes_the_scope_of_a_foreign_key_target_or_of_its_neighbours() {
        let s = scopes(
            &[
                "CREATE TABLE badges (crate_id int)",
                "ALTER TABLE badges ADD FOREIGN KEY (crate_id) REFERENCES crates (id)",
                "CREATE TABLE audit (id int)",
                "INSERT INTO audit SELECT 1; UPDATE plans SET x = 1",
                "DROP TABLE badges; DROP TABLE audit",
            ],
            &marked(&["crates"], &["plans"]),
        );
        assert_eq!(s[0].1, ["badges"]);
        assert_eq!(s[2].0, ["audit"]);
        assert_eq!(s[4].0, ["audit"]);
        assert_eq!(s[4].1, ["badges"]);
    }

    #[test]
    fn indexes_lead_to_their_table_through_renames() {
        let s = scopes(
            &[
                "CREATE INDEX o_idx ON orders (id); CREATE TABLE t (id int CONSTRAINT t_named UNIQUE)",
                "ALTER INDEX o_idx RENAME TO o_idx2",
                "DROP INDEX o_idx2; DROP INDEX CONCURRENTLY t_named",
                "DROP INDEX orders_pkey",
                "DROP INDEX nobody_knows",
            ],
            &marked(&["orders", "t"], &[]),
        );
        assert_eq!(s[1].1, ["orders"]);
        assert_eq!(s[2].1, ["orders", "t"]);
        assert_eq!(s[3].1, ["orders"]);
        assert!(s[4].1.is_empty() && s[4].2.is_empty());
    }

    #[test]
    fn views_follow_what_they_read() {
        let s = scopes(
            &[
                "CREATE MATERIALIZED VIEW recent AS SELECT * FROM orders",
                "REFRESH MATERIALIZED VIEW recent",
                "CREATE VIEW plan_names AS SELECT name FROM plans",
            ],
            &marked(&["orders"], &["plans"]),
        );
        assert_eq!(s[1].1, ["recent"]);
        assert_eq!(s[2].0, ["plan_names"]);
    }

    #[test]
    fn diesel_manage_updated_at_touches_its_table() {
        let s = scopes(
            &["SELECT diesel_manage_updated_at('orders')"],
            &marked(&["orders"], &[]),
        );
        assert_eq!(s[0].1, ["orders"]);
    }

    #[test]
    fn a_name_reused_after_a_drop_is_another_table() {
        let s = scopes(
            &[
                "CREATE TABLE logs (id int); INSERT INTO plans VALUES (1)",
                "DROP TABLE logs; UPDATE plans SET x = 1",
                "CREATE TABLE logs (id int)",
            ],
            &marked(&["logs"], &["plans"]),
        );
        assert_eq!(s[0].0, ["logs", "plans"]);
        assert_eq!(s[2].1, ["logs"]);
    }

    #[test]
    fn the_default_scope_decides_tables_that_lived_and_died_alone_but_not_living_ones() {
        let sqls = [
            "CREATE TABLE scratch (id int)",
            "DROP TABLE scratch",
            "CREATE TABLE orphan (id int)",
        ];
        let facts: Vec<SqlFacts> = sqls.iter().map(|s| analyze(s).unwrap()).collect();
        let input: Vec<(&SqlFacts, Option<Scope>)> = facts.iter().map(|f| (f, None)).collect();
        let h = History::new(&input, &marked(&[], &[]), Some(Scope::Shared));
        assert_eq!(h.scopes(0).shared.len(), 1);
        assert_eq!(h.scopes(1).shared.len(), 1);
        assert_eq!(h.scopes(2).unknown.len(), 1);
    }
}
