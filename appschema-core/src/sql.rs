//! What a migration's SQL touches: the tables it creates, alters, drops,
//! indexes, comments on, triggers on or writes to, and the foreign keys it
//! declares.
//!
//! # Why `pg_query` and not `sqlparser`
//!
//! The SQL is parsed by [`pg_query`], which links libpg_query: PostgreSQL's
//! own grammar (`gram.y`) extracted from the server's source. Migrations are
//! written for PostgreSQL and contain whatever PostgreSQL accepts, so only
//! PostgreSQL's grammar is guaranteed to accept them all. Measured against
//! what real migrations hold (see this module's tests), `pg_query` parses
//! `DO $$ … $$` blocks (and, through its PL/pgSQL parser, the statements
//! inside them), `CREATE FUNCTION … $$ … $$`, `CREATE TRIGGER`,
//! `CREATE INDEX CONCURRENTLY`, `COMMENT ON`, `CREATE EXTENSION`, quoted
//! identifiers and schema-qualified names. `sqlparser` is a hand-written
//! multi-dialect parser whose PostgreSQL coverage trails the server: it keeps
//! PL/pgSQL bodies as opaque strings, and each PostgreSQL release's new syntax
//! reaches it late, so a valid migration could be refused or misread. The
//! price of `pg_query` is build time (C code plus bindgen, needs
//! `libclang-dev`): about 1.5 minutes once on two cores, then cached.

use std::collections::BTreeSet;

use pg_query::protobuf::{self, ConstrType, ObjectType};
use pg_query::NodeEnum;

/// A table name as written in SQL: optional schema, then the name (both
/// already case-folded or unquoted by the parser).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableRef {
    /// The schema, when the name was qualified.
    pub schema: Option<String>,
    /// The table's name.
    pub name: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What one migration's SQL does to tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlFacts {
    /// Tables created, altered, dropped, renamed, indexed, commented on,
    /// triggered on, truncated or written to.
    pub touched: BTreeSet<TableRef>,
    /// Foreign keys declared: (referencing table, referenced table).
    pub foreign_keys: BTreeSet<(TableRef, TableRef)>,
}

/// Parses `sql` with PostgreSQL's grammar and reports the tables it touches.
/// The error is PostgreSQL's own syntax error message.
pub fn analyze(sql: &str) -> Result<SqlFacts, String> {
    let mut facts = SqlFacts::default();
    analyze_into(sql, &mut facts)?;
    Ok(facts)
}

fn analyze_into(sql: &str, facts: &mut SqlFacts) -> Result<(), String> {
    let parsed = pg_query::parse(sql).map_err(parse_message)?;
    for (table, context) in &parsed.tables {
        if matches!(context, pg_query::Context::DDL | pg_query::Context::DML) {
            facts.touched.insert(split_name(table));
        }
    }
    for raw in &parsed.protobuf.stmts {
        if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
            statement(node, facts);
        }
    }
    Ok(())
}

/// What `pg_query`'s table list does not cover: foreign keys, comments,
/// renames, and the SQL inside `DO` blocks.
fn statement(node: &NodeEnum, facts: &mut SqlFacts) {
    match node {
        NodeEnum::CreateStmt(s) => {
            let Some(from) = s.relation.as_ref().map(range_var) else {
                return;
            };
            for elt in s.table_elts.iter().chain(&s.constraints) {
                match &elt.node {
                    Some(NodeEnum::Constraint(c)) => foreign_key(&from, c, facts),
                    Some(NodeEnum::ColumnDef(col)) => column_def(&from, col, facts),
                    _ => {}
                }
            }
        }
        NodeEnum::AlterTableStmt(s) => {
            let Some(from) = s.relation.as_ref().map(range_var) else {
                return;
            };
            for cmd in &s.cmds {
                if let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node {
                    match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                        Some(NodeEnum::Constraint(c)) => foreign_key(&from, c, facts),
                        Some(NodeEnum::ColumnDef(col)) => column_def(&from, col, facts),
                        _ => {}
                    }
                }
            }
        }
        NodeEnum::RenameStmt(s) => {
            if let Some(rel) = &s.relation {
                facts.touched.insert(range_var(rel));
            }
        }
        NodeEnum::CommentStmt(s) => {
            let objtype = ObjectType::try_from(s.objtype).unwrap_or(ObjectType::Undefined);
            let names = s.object.as_ref().map(|o| name_list(o)).unwrap_or_default();
            let table = match objtype {
                ObjectType::ObjectTable | ObjectType::ObjectView => qualified(&names),
                // table.column or schema.table.column
                ObjectType::ObjectColumn if names.len() >= 2 => {
                    qualified(&names[..names.len() - 1])
                }
                _ => None,
            };
            facts.touched.extend(table);
        }
        // pg_query lists dropped tables, triggers and rules; views too.
        NodeEnum::DropStmt(s)
            if ObjectType::try_from(s.remove_type) == Ok(ObjectType::ObjectView) =>
        {
            for o in &s.objects {
                facts.touched.extend(qualified(&name_list(o)));
            }
        }
        NodeEnum::DoStmt(s) => {
            for arg in &s.args {
                if let Some(NodeEnum::DefElem(d)) = &arg.node {
                    if d.defname == "as" {
                        if let Some(NodeEnum::String(body)) =
                            d.arg.as_ref().and_then(|a| a.node.as_ref())
                        {
                            do_block(&body.sval, facts);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn column_def(from: &TableRef, col: &protobuf::ColumnDef, facts: &mut SqlFacts) {
    for c in &col.constraints {
        if let Some(NodeEnum::Constraint(c)) = &c.node {
            foreign_key(from, c, facts);
        }
    }
}

fn foreign_key(from: &TableRef, c: &protobuf::Constraint, facts: &mut SqlFacts) {
    if ConstrType::try_from(c.contype) == Ok(ConstrType::ConstrForeign) {
        if let Some(to) = &c.pktable {
            facts.foreign_keys.insert((from.clone(), range_var(to)));
        }
    }
}

/// The statements of a `DO` block, found by PostgreSQL's PL/pgSQL parser.
/// Statements it runs through dynamic `EXECUTE` strings cannot be seen; a
/// migration that only does that must declare its scope.
fn do_block(body: &str, facts: &mut SqlFacts) {
    let mut tag = String::from("appschema");
    while body.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    let wrapped = format!(
        "CREATE FUNCTION appschema_do() RETURNS void AS ${tag}${body}${tag}$ LANGUAGE plpgsql"
    );
    let Ok(tree) = pg_query::parse_plpgsql(&wrapped) else {
        return;
    };
    let mut queries = Vec::new();
    collect_queries(&tree, &mut queries);
    for query in queries {
        // Conditions and assignments are expressions, not statements; they
        // only read, so failing to parse them as statements loses nothing.
        let _ = analyze_into(&query, facts);
    }
}

fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("query", serde_json::Value::String(q)) => out.push(q.clone()),
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

fn range_var(v: &protobuf::RangeVar) -> TableRef {
    TableRef {
        schema: (!v.schemaname.is_empty()).then(|| v.schemaname.clone()),
        name: v.relname.clone(),
    }
}

fn split_name(name: &str) -> TableRef {
    match name.rsplit_once('.') {
        Some((schema, table)) => TableRef {
            schema: Some(schema.to_string()),
            name: table.to_string(),
        },
        None => TableRef {
            schema: None,
            name: name.to_string(),
        },
    }
}

fn name_list(node: &protobuf::Node) -> Vec<String> {
    match &node.node {
        Some(NodeEnum::List(list)) => list
            .items
            .iter()
            .filter_map(|i| match &i.node {
                Some(NodeEnum::String(s)) => Some(s.sval.clone()),
                _ => None,
            })
            .collect(),
        Some(NodeEnum::String(s)) => vec![s.sval.clone()],
        _ => Vec::new(),
    }
}

/// `[name]` or `[schema, name]` (a leading database name is ignored).
fn qualified(names: &[String]) -> Option<TableRef> {
    match names {
        [] => None,
        [name] => Some(TableRef {
            schema: None,
            name: name.clone(),
        }),
        [.., schema, name] => Some(TableRef {
            schema: Some(schema.clone()),
            name: name.clone(),
        }),
    }
}

/// Splits `sql` into statements with PostgreSQL's grammar, for migrations
/// that run outside a transaction (a multi-statement string would run as one
/// implicit transaction and refuse `CREATE INDEX CONCURRENTLY`).
pub fn split_statements(sql: &str) -> Result<Vec<String>, String> {
    pg_query::split_with_parser(sql)
        .map(|v| {
            v.into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .map_err(parse_message)
}

/// PostgreSQL's own message, without pg_query's prefix.
fn parse_message(e: pg_query::Error) -> String {
    match e {
        pg_query::Error::Parse(m) | pg_query::Error::Split(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touched(sql: &str) -> Vec<String> {
        analyze(sql)
            .unwrap()
            .touched
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn ddl_of_every_kind_names_its_table() {
        assert_eq!(touched("CREATE TABLE orders (id bigint)"), ["orders"]);
        assert_eq!(
            touched("ALTER TABLE public.plans ADD COLUMN x int"),
            ["public.plans"]
        );
        assert_eq!(
            touched("DROP TABLE IF EXISTS orders, items"),
            ["items", "orders"]
        );
        assert_eq!(
            touched("CREATE INDEX CONCURRENTLY o_idx ON orders (id)"),
            ["orders"]
        );
        assert_eq!(touched("COMMENT ON TABLE orders IS 'x'"), ["orders"]);
        assert_eq!(
            touched("COMMENT ON COLUMN public.plans.name IS 'x'"),
            ["public.plans"]
        );
        assert_eq!(
            touched("CREATE TRIGGER t BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION f()"),
            ["orders"]
        );
        assert_eq!(
            touched("ALTER TABLE orders RENAME TO purchases"),
            ["orders"]
        );
        assert_eq!(
            touched("ALTER TABLE orders RENAME COLUMN a TO b"),
            ["orders"]
        );
        assert_eq!(
            touched(r#"CREATE TABLE "Order Lines" (id int)"#),
            ["Order Lines"]
        );
        assert_eq!(
            touched("INSERT INTO plans (name) VALUES ('free')"),
            ["plans"]
        );
        assert_eq!(touched("UPDATE orders SET x = 1"), ["orders"]);
    }

    #[test]
    fn statements_that_touch_no_table_give_nothing() {
        assert!(touched("CREATE EXTENSION IF NOT EXISTS pgcrypto").is_empty());
        assert!(touched(
            "CREATE FUNCTION f() RETURNS trigger AS $$ BEGIN NEW.x := 1; RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        .is_empty());
        assert!(touched("CREATE TYPE mood AS ENUM ('ok', 'sad')").is_empty());
    }

    #[test]
    fn statements_inside_do_blocks_are_seen() {
        assert_eq!(
            touched(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'x') THEN
                     ALTER TABLE orders ADD COLUMN x int;
                   END IF;
                 END $$;"
            ),
            ["orders"]
        );
    }

    #[test]
    fn foreign_keys_are_reported_from_inline_table_and_alter_constraints() {
        let facts = analyze(
            "CREATE TABLE orders (id int, plan_id int REFERENCES public.plans (id),
                                  item_id int, FOREIGN KEY (item_id) REFERENCES items (id));
             ALTER TABLE plans ADD CONSTRAINT fk FOREIGN KEY (o) REFERENCES orders (id);",
        )
        .unwrap();
        let fks: Vec<String> = facts
            .foreign_keys
            .iter()
            .map(|(a, b)| format!("{a}->{b}"))
            .collect();
        assert_eq!(
            fks,
            ["orders->items", "orders->public.plans", "plans->orders"]
        );
    }

    #[test]
    fn invalid_sql_gives_postgresql_s_message() {
        let err = analyze("CREATE TABLE (").unwrap_err();
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn splitting_keeps_dollar_quoted_bodies_whole() {
        let parts = split_statements(
            "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql; CREATE INDEX CONCURRENTLY i ON t (a);",
        )
        .unwrap();
        assert_eq!(parts.len(), 2);
    }
}
