//! The scope of every table, view, function, type and schema the history
//! ever had, not only the tables the schema files still mark.
//!
//! The migrations are walked in the order diesel applies them, and each
//! migration's statements in the order they run, following each object
//! through its life: created, renamed (`packages` becomes `crates`),
//! indexed (so `DROP INDEX` and `ALTER INDEX` reach the index's table),
//! dropped (a later object of the same name, in a later statement of the
//! same migration too, is another object). Each object then takes its scope
//! from, in turn:
//!
//! - its marking in the schema files (by its last name);
//! - the other tables of a migration that touches it (a migration has one
//!   scope, so a single known scope among its tables is every table's);
//! - a migration's declared scope (`appschema_scope` in its metadata.toml);
//! - its foreign keys: a table referencing an isolated table is isolated
//!   (shared -> isolated is refused), a table a shared table references is
//!   shared;
//! - for views and materialized views, what they read, and for functions,
//!   the tables and functions their bodies name: isolated if any is
//!   isolated, shared if all are shared;
//! - for functions still undecided, the migrations calling them (a shared
//!   caller first, then isolated ones);
//! - schemas are shared, and so is what is created in one the history
//!   created (through the migration that names it);
//!
//! repeated until nothing changes; then, without a project default, a
//! function whose bodies name no table and none of the application's
//! functions is shared (every tenant's path finds it there). The planner then decides each migration
//! from the scopes of what it touches.

use std::collections::{BTreeSet, HashMap};

use crate::schema_source::TableScopes;
use crate::sql::{ObjectKind, SqlFacts, StatementFacts, TableRef};
use crate::Scope;

/// What a node is: names of different kinds never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// A table, view, materialized view or foreign table.
    Relation,
    /// A function, type or schema.
    Object(ObjectKind),
}

/// One table, view, function, type or schema over its life, under
/// successive names.
#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Its last name.
    name: String,
    scope: Option<Scope>,
    /// For views: the relations its query reads; for functions: the known
    /// relations and functions their bodies name.
    reads: Vec<usize>,
    /// For functions: whether every body it had names no relation (but
    /// catalogs) and none of the application's functions.
    pure: bool,
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
    /// The application's functions called, by node.
    calls: Vec<usize>,
    /// What the migration names qualified with the shared schema, as
    /// written, with its node.
    shared_qualified: Vec<(String, usize)>,
    /// Whether it creates an extension.
    pub(super) extensions: bool,
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
    /// Relations in both scopes (`#[appschema::both]`), as written. (The
    /// table a foreign key references is not touched: such a key resolves
    /// to the copy in the schema the migration runs in.)
    pub(super) both: BTreeSet<String>,
}

impl History {
    /// Walks `migrations` (facts and declared scope, in diesel's order) and
    /// settles every table's scope.
    ///
    /// `default_scope` (the project's `appschema_default_scope`) also goes
    /// to tables nothing decides that no longer exist at the end of the
    /// history: created and dropped with no link to any other table, they
    /// leave the same schema whichever scope their migrations ran in; and to
    /// functions and types nothing decides (what the default always covered
    /// before they were followed). Without a default, a function naming no
    /// table and none of the application's functions is shared.
    pub(super) fn new(
        migrations: &[(&SqlFacts, Option<Scope>)],
        marked: &TableScopes,
        default_scope: Option<Scope>,
    ) -> History {
        let mut walk = Walk {
            marked: marked.iter().map(|(name, _)| name.to_string()).collect(),
            ..Walk::default()
        };
        let touched: Vec<Touched> = migrations.iter().map(|(f, _)| walk.migration(f)).collect();
        let mut history = History {
            nodes: walk.nodes,
            touched,
        };
        history.mark(&walk.live, marked);
        // The project's default, when set, decides what the pure-function
        // rule would (either scope works for those).
        let pure_rule = default_scope.is_none();
        history.settle(migrations, pure_rule);
        if let Some(scope) = default_scope {
            let live: BTreeSet<usize> = walk.live.values().copied().collect();
            let mut changed = false;
            for (n, node) in history.nodes.iter_mut().enumerate() {
                // Functions and types nothing decides take it too: the
                // default is for what touches no table.
                if node.scope.is_none() && (!live.contains(&n) || node.kind != Kind::Relation) {
                    node.scope = Some(scope);
                    changed = true;
                }
            }
            if changed {
                history.settle(migrations, pure_rule);
            }
        }
        history
    }

    /// Applies the schema files' markings: to the table living under the
    /// marked name at the end of the history, else (a table the schema files
    /// still mark but a migration dropped) to the last table of that name.
    fn mark(&mut self, live: &HashMap<(Kind, String), usize>, marked: &TableScopes) {
        for (name, table) in marked.iter() {
            let node = live
                .get(&(Kind::Relation, name.to_string()))
                .copied()
                .or_else(|| {
                    self.nodes
                        .iter()
                        .rposition(|n| n.kind == Kind::Relation && n.name == name)
                });
            if let Some(node) = node {
                self.nodes[node].scope = Some(table.scope);
            }
        }
    }

    fn settle(&mut self, migrations: &[(&SqlFacts, Option<Scope>)], pure_rule: bool) {
        loop {
            let mut changed = false;
            // Functions of no known scope called by isolated migrations:
            // isolated unless a shared migration calls them too (which
            // needs them in the shared schema).
            let mut isolated_calls = Vec::new();
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
                for &n in &touched.calls {
                    if self.nodes[n].scope.is_some() {
                        continue;
                    }
                    match scope {
                        // A both-scope migration runs in the shared schema
                        // too, so what it calls must be there.
                        Some(Scope::Shared | Scope::Both) => {
                            self.nodes[n].scope = Some(Scope::Shared);
                            changed = true;
                        }
                        Some(Scope::Isolated) => isolated_calls.push(n),
                        None => {}
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
                for n in isolated_calls {
                    if self.nodes[n].scope.is_none() {
                        self.nodes[n].scope = Some(Scope::Isolated);
                        changed = true;
                    }
                }
            }
            if !changed && pure_rule {
                // Last: a function no rule decided whose bodies name no
                // table and none of the application's functions works the
                // same from the shared schema, where every tenant's path
                // finds it (diesel's `diesel_manage_updated_at`). Not when
                // a migration naming it also touches a table nothing
                // decides: that table would be decided by this guess.
                let with_undecided_table: BTreeSet<usize> = self
                    .touched
                    .iter()
                    .filter(|t| {
                        t.relations.iter().any(|&(_, r)| {
                            self.nodes[r].kind == Kind::Relation && self.nodes[r].scope.is_none()
                        })
                    })
                    .flat_map(|t| t.relations.iter().map(|&(_, n)| n))
                    .collect();
                for (n, node) in self.nodes.iter_mut().enumerate() {
                    if node.scope.is_none() && node.pure && !with_undecided_table.contains(&n) {
                        node.scope = Some(Scope::Shared);
                        changed = true;
                    }
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
                Some(Scope::Both) => out.both.insert(written.clone()),
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

    /// Migration `i`'s foreign keys from a both-scope table to an isolated
    /// one.
    pub(super) fn both_to_isolated(&self, i: usize) -> Vec<(String, String)> {
        self.touched[i]
            .foreign_keys
            .iter()
            .filter(|&&(_, from, _, to)| {
                self.nodes[from].scope == Some(Scope::Both)
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
                self.nodes[from].scope.is_some_and(Scope::in_tenants)
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

    /// What isolated migration `i` names qualified with the shared schema
    /// that is per tenant: in a tenant it would resolve to the shared
    /// schema, where it does not exist.
    pub(super) fn shared_qualified_isolated(&self, i: usize) -> BTreeSet<String> {
        self.touched[i]
            .shared_qualified
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
    /// The object living under each name now.
    live: HashMap<(Kind, String), usize>,
    /// The table of each index living now.
    indexes: HashMap<String, usize>,
    /// The names the schema files mark: tables a body or a `DO` block may
    /// name before (or without) any migration creating them.
    marked: BTreeSet<String>,
}

/// A system catalog (`pg_class`, `information_schema.tables`): the same
/// in every schema.
fn is_catalog(r: &TableRef) -> bool {
    matches!(
        r.schema.as_deref(),
        Some("pg_catalog" | "information_schema")
    ) || (r.schema.is_none() && r.name.starts_with("pg_"))
}

/// The schema names a shared object is written with.
const SHARED_SCHEMA: &str = crate::schema_source::DEFAULT_SHARED_SCHEMA;

impl Walk {
    fn node(&mut self, name: &str) -> usize {
        self.node_of(Kind::Relation, name)
    }

    fn node_of(&mut self, kind: Kind, name: &str) -> usize {
        if let Some(&n) = self.live.get(&(kind, name.to_string())) {
            return n;
        }
        self.nodes.push(Node {
            kind,
            name: name.to_string(),
            // A schema is database-wide: shared.
            scope: (kind == Kind::Object(ObjectKind::Schema)).then_some(Scope::Shared),
            reads: Vec::new(),
            pure: kind == Kind::Object(ObjectKind::Function),
        });
        let n = self.nodes.len() - 1;
        self.live.insert((kind, name.to_string()), n);
        n
    }

    fn living(&self, kind: Kind, name: &str) -> Option<usize> {
        self.live.get(&(kind, name.to_string())).copied()
    }

    /// The relation living under `name`, or the marked table of that name.
    fn known_relation(&mut self, name: &str) -> Option<usize> {
        match self.living(Kind::Relation, name) {
            Some(n) => Some(n),
            None if self.marked.contains(name) => Some(self.node(name)),
            None => None,
        }
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
            .filter(|((kind, table), _)| {
                *kind == Kind::Relation
                    && name
                        .strip_prefix(table.as_str())
                        .is_some_and(|rest| rest.starts_with('_'))
            })
            .max_by_key(|((_, table), _)| table.len())
            .map(|(_, &n)| n)
    }

    /// Follows one migration's statements in order: a name dropped and
    /// created again by the same migration is a new object from that
    /// statement on.
    fn migration(&mut self, facts: &SqlFacts) -> Touched {
        let mut out = Touched::default();
        for statement in &facts.statements {
            self.statement(statement, &mut out);
        }
        out
    }

    /// Records that the migration names `written` (node `n`): it touches
    /// it, and, written in a schema the history created, that schema; or
    /// written with the shared schema, it is checked once scopes settle.
    fn add(&mut self, out: &mut Touched, written: &TableRef, display: String, n: usize) {
        if !out.relations.contains(&(display.clone(), n)) {
            out.relations.push((display.clone(), n));
        }
        self.qualification(out, written, display, n);
    }

    fn qualification(&mut self, out: &mut Touched, written: &TableRef, display: String, n: usize) {
        match written.schema.as_deref() {
            Some(SHARED_SCHEMA) if !out.shared_qualified.contains(&(display.clone(), n)) => {
                out.shared_qualified.push((display, n));
            }
            Some(SHARED_SCHEMA) => {}
            Some(schema) => {
                if let Some(s) = self.living(Kind::Object(ObjectKind::Schema), schema) {
                    let display = format!("schema {schema}");
                    if !out.relations.contains(&(display.clone(), s)) {
                        out.relations.push((display, s));
                    }
                }
            }
            None => {}
        }
    }

    fn statement(&mut self, facts: &StatementFacts, out: &mut Touched) {
        for t in &facts.touched {
            let n = self.node(&t.name);
            self.add(out, t, t.to_string(), n);
        }
        for (index, table) in &facts.indexes {
            let n = self.node(&table.name);
            self.indexes.insert(index.name.clone(), n);
        }
        for index in &facts.index_uses {
            match self.index_owner(&index.name) {
                Some(n) => {
                    let written = self.nodes[n].name.clone();
                    if !out.relations.contains(&(written.clone(), n)) {
                        out.relations.push((written, n));
                    }
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
            self.add(out, view, view.to_string(), v);
            let reads: Vec<usize> = read
                .iter()
                .map(|r| self.node(&r.name))
                .filter(|&r| r != v)
                .collect();
            self.nodes[v].reads = reads;
        }
        for (object, body) in &facts.created {
            let kind = Kind::Object(object.kind);
            let n = self.node_of(kind, &object.name.name);
            self.add(out, &object.name, object.to_string(), n);
            // Only what the history knows: a body also names catalogs,
            // built-in functions and its own variables.
            let mut reads: Vec<usize> = body
                .relations
                .iter()
                .filter_map(|r| self.known_relation(&r.name))
                .collect();
            reads.extend(
                body.calls
                    .iter()
                    .filter_map(|f| self.living(Kind::Object(ObjectKind::Function), &f.name))
                    .filter(|&r| r != n),
            );
            // A body naming a per-tenant table with the shared schema
            // reaches the shared schema's from every tenant.
            for r in body.relations.iter().filter(|r| r.schema.is_some()) {
                if let Some(t) = self.living(Kind::Relation, &r.name) {
                    self.qualification(out, r, r.to_string(), t);
                }
            }
            let names_relations = body.relations.iter().any(|r| !is_catalog(r));
            if names_relations || !reads.is_empty() {
                self.nodes[n].pure = false;
            }
            for r in reads {
                if !self.nodes[n].reads.contains(&r) {
                    self.nodes[n].reads.push(r);
                }
            }
        }
        for object in &facts.used {
            let n = self.node_of(Kind::Object(object.kind), &object.name.name);
            self.add(out, &object.name, object.to_string(), n);
        }
        for f in &facts.calls {
            if let Some(n) = self.living(Kind::Object(ObjectKind::Function), &f.name) {
                if !out.calls.contains(&n) {
                    out.calls.push(n);
                }
                self.qualification(out, f, format!("{f}()"), n);
            }
        }
        for r in &facts.reads {
            if let Some(n) = self.known_relation(&r.name) {
                self.add(out, r, r.to_string(), n);
            }
        }
        out.extensions |= !facts.extensions.is_empty();
        for (old, new) in &facts.object_renames {
            let kind = Kind::Object(old.kind);
            let n = self.node_of(kind, &old.name.name);
            self.live.remove(&(kind, old.name.name.clone()));
            self.live.insert((kind, new.clone()), n);
            self.nodes[n].name = new.clone();
        }
        for (old, new) in &facts.renames {
            let n = self.node(&old.name);
            self.live.remove(&(Kind::Relation, old.name.clone()));
            self.live.insert((Kind::Relation, new.name.clone()), n);
            self.nodes[n].name = new.name.clone();
        }
        for dropped in &facts.dropped {
            if let Some(n) = self.live.remove(&(Kind::Relation, dropped.name.clone())) {
                self.indexes.retain(|_, owner| *owner != n);
            }
        }
        for dropped in &facts.object_drops {
            self.live
                .remove(&(Kind::Object(dropped.kind), dropped.name.name.clone()));
        }
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
