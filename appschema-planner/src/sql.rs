//! What a migration's SQL touches, statement by statement: the tables it
//! creates, alters, drops, indexes, comments on, triggers on or writes to,
//! the foreign keys it declares, the functions, types and schemas it
//! creates, alters or drops (with what each function's body names), the
//! functions it calls and the extensions it creates.
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
use pg_query::{NodeEnum, NodeRef};

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

/// What one statement does to tables, functions, types and schemas (the
/// statements of a `DO` block follow it as statements of their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementFacts {
    /// Tables (and views) created, altered, dropped, renamed, indexed,
    /// commented on, triggered on, refreshed, truncated or written to.
    pub touched: BTreeSet<TableRef>,
    /// Foreign keys declared: (referencing table, referenced table).
    pub foreign_keys: BTreeSet<(TableRef, TableRef)>,
    /// Tables and views renamed, in order: (old name, new name).
    pub renames: Vec<(TableRef, TableRef)>,
    /// Tables and views dropped.
    pub dropped: BTreeSet<TableRef>,
    /// Views and materialized views created, with the relations their query reads.
    pub views: Vec<(TableRef, BTreeSet<TableRef>)>,
    /// Indexes created, by name, with their table (named constraints that
    /// create an index count: primary keys, unique and exclusion constraints).
    pub indexes: Vec<(TableRef, TableRef)>,
    /// Indexes dropped, altered, commented on or reindexed, by name: the
    /// statement touches the index's table, which only the history knows.
    pub index_uses: BTreeSet<TableRef>,
    /// Indexes renamed, in order: (old name, new name).
    pub index_renames: Vec<(TableRef, TableRef)>,
    /// Tables a trigger is created on (Citus refuses triggers on
    /// distributed tables).
    pub triggers: BTreeSet<TableRef>,
    /// Functions (and procedures), types and schemas created or replaced,
    /// with what a function's body names.
    pub created: Vec<(ObjectRef, Body)>,
    /// Functions and types altered (`ALTER FUNCTION`, `ALTER TYPE … ADD
    /// VALUE`) or commented on.
    pub used: BTreeSet<ObjectRef>,
    /// Functions and types renamed, in order: (old name, new name).
    pub object_renames: Vec<(ObjectRef, String)>,
    /// Functions and types dropped.
    pub object_drops: BTreeSet<ObjectRef>,
    /// Functions called, by any expression or as a trigger's function:
    /// only the history knows which are the application's own.
    pub calls: BTreeSet<TableRef>,
    /// Relations read by the statements of a `DO` block: only those the
    /// history knows count.
    pub reads: BTreeSet<TableRef>,
    /// Extensions created.
    pub extensions: BTreeSet<String>,
}

/// What one migration's SQL does, statement by statement, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlFacts {
    /// Each statement's facts, in the order they run.
    pub statements: Vec<StatementFacts>,
}

impl SqlFacts {
    /// Every relation some statement touches.
    pub fn touched(&self) -> BTreeSet<TableRef> {
        self.statements
            .iter()
            .flat_map(|s| s.touched.iter().cloned())
            .collect()
    }

    /// Every foreign key some statement declares.
    pub fn foreign_keys(&self) -> BTreeSet<(TableRef, TableRef)> {
        self.statements
            .iter()
            .flat_map(|s| s.foreign_keys.iter().cloned())
            .collect()
    }
}

/// The kinds of objects followed besides tables and views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// A function or procedure (overloads are one object: by name).
    Function,
    /// A type: enum, composite, range or domain.
    Type,
    /// A schema.
    Schema,
}

/// A function, type or schema as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// What it is.
    pub kind: ObjectKind,
    /// Its name (a schema's name is `name`, with no schema).
    pub name: TableRef,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ObjectKind::Function => write!(f, "{}()", self.name),
            ObjectKind::Type => write!(f, "type {}", self.name),
            ObjectKind::Schema => write!(f, "schema {}", self.name),
        }
    }
}

/// What a function's body names: PL/pgSQL read by PostgreSQL's PL/pgSQL
/// parser, `LANGUAGE sql` bodies as SQL. Statements built at run time
/// (`EXECUTE 'DROP …' || name`) cannot be seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// Relations named, read or written.
    pub relations: BTreeSet<TableRef>,
    /// Functions called.
    pub calls: BTreeSet<TableRef>,
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
    for raw in &parsed.protobuf.stmts {
        if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
            let start = usize::try_from(raw.stmt_location)
                .unwrap_or(0)
                .min(sql.len());
            let len = usize::try_from(raw.stmt_len).unwrap_or(0);
            let end = if len == 0 {
                sql.len()
            } else {
                (start + len).min(sql.len())
            };
            let text = sql.get(start..end).unwrap_or(sql);
            let mut one = StatementFacts::default();
            let mut nested = SqlFacts::default();
            statement(node, text, &mut one, &mut nested);
            facts.statements.push(one);
            facts.statements.append(&mut nested.statements);
        }
    }
    Ok(())
}

/// The relations a statement writes or changes (pg_query's DDL and DML
/// contexts), its function calls naming a table, then what each kind of
/// statement adds: foreign keys, comments, renames, drops, views, indexes,
/// and the SQL inside `DO` blocks.
fn statement(node: &NodeEnum, text: &str, facts: &mut StatementFacts, nested: &mut SqlFacts) {
    // The relation of ALTER INDEX / ALTER SEQUENCE is no table.
    let skip_relation = match node {
        NodeEnum::AlterTableStmt(s) => {
            let objtype = ObjectType::try_from(s.objtype).unwrap_or(ObjectType::Undefined);
            if objtype == ObjectType::ObjectIndex {
                facts.index_uses.extend(s.relation.as_ref().map(range_var));
            }
            // `ALTER TYPE … ADD ATTRIBUTE`: the composite type, not a table.
            if objtype == ObjectType::ObjectType {
                facts.used.extend(
                    s.relation
                        .as_ref()
                        .map(|t| object(ObjectKind::Type, range_var(t))),
                );
            }
            matches!(
                objtype,
                ObjectType::ObjectIndex | ObjectType::ObjectSequence | ObjectType::ObjectType
            )
        }
        _ => false,
    };
    for (n, _, context, _) in node.nodes() {
        match n {
            NodeRef::RangeVar(v)
                if matches!(context, pg_query::Context::DDL | pg_query::Context::DML)
                    && !skip_relation =>
            {
                facts.touched.insert(range_var(v));
            }
            NodeRef::FuncCall(f) => {
                facts.touched.extend(managed_table(f));
                facts.calls.extend(qualified(&strings(&f.funcname)));
            }
            _ => {}
        }
    }
    match node {
        NodeEnum::CreateStmt(s) => {
            let Some(from) = s.relation.as_ref().map(range_var) else {
                return;
            };
            for elt in s.table_elts.iter().chain(&s.constraints) {
                match &elt.node {
                    Some(NodeEnum::Constraint(c)) => constraint(&from, c, facts),
                    Some(NodeEnum::ColumnDef(col)) => column_def(&from, col, facts),
                    _ => {}
                }
            }
        }
        NodeEnum::AlterTableStmt(s) if !skip_relation => {
            let Some(from) = s.relation.as_ref().map(range_var) else {
                return;
            };
            for cmd in &s.cmds {
                if let Some(NodeEnum::AlterTableCmd(cmd)) = &cmd.node {
                    match cmd.def.as_ref().and_then(|d| d.node.as_ref()) {
                        Some(NodeEnum::Constraint(c)) => constraint(&from, c, facts),
                        Some(NodeEnum::ColumnDef(col)) => column_def(&from, col, facts),
                        _ => {}
                    }
                }
            }
        }
        NodeEnum::CreateTrigStmt(s) => {
            facts.triggers.extend(s.relation.as_ref().map(range_var));
            facts.calls.extend(qualified(&strings(&s.funcname)));
        }
        NodeEnum::CreateFunctionStmt(s) => {
            if let Some(name) = qualified(&strings(&s.funcname)) {
                let body = function_body(s, text);
                facts
                    .created
                    .push((object(ObjectKind::Function, name), body));
            }
        }
        NodeEnum::AlterFunctionStmt(s) => {
            facts.used.extend(s.func.as_ref().and_then(function_name));
        }
        NodeEnum::CreateEnumStmt(s) => created_type(&s.type_name, facts),
        NodeEnum::CreateRangeStmt(s) => created_type(&s.type_name, facts),
        NodeEnum::CreateDomainStmt(s) => created_type(&s.domainname, facts),
        NodeEnum::CompositeTypeStmt(s) => {
            if let Some(t) = s.typevar.as_ref().map(range_var) {
                facts.touched.remove(&t);
                facts
                    .created
                    .push((object(ObjectKind::Type, t), Body::default()));
            }
        }
        NodeEnum::DefineStmt(s) if ObjectType::try_from(s.kind) == Ok(ObjectType::ObjectType) => {
            created_type(&s.defnames, facts)
        }
        NodeEnum::AlterEnumStmt(s) => {
            facts
                .used
                .extend(qualified(&strings(&s.type_name)).map(|t| object(ObjectKind::Type, t)));
        }
        NodeEnum::CreateSchemaStmt(s) => facts.created.push((
            object(
                ObjectKind::Schema,
                TableRef {
                    schema: None,
                    name: s.schemaname.clone(),
                },
            ),
            Body::default(),
        )),
        NodeEnum::CreateExtensionStmt(s) => {
            facts.extensions.insert(s.extname.clone());
        }
        NodeEnum::IndexStmt(s) => {
            if let (false, Some(table)) = (s.idxname.is_empty(), &s.relation) {
                let table = range_var(table);
                facts.indexes.push((
                    TableRef {
                        schema: table.schema.clone(),
                        name: s.idxname.clone(),
                    },
                    table,
                ));
            }
        }
        NodeEnum::RenameStmt(s) => {
            let kind = match ObjectType::try_from(s.rename_type).unwrap_or(ObjectType::Undefined) {
                ObjectType::ObjectFunction
                | ObjectType::ObjectProcedure
                | ObjectType::ObjectRoutine => Some(ObjectKind::Function),
                ObjectType::ObjectType | ObjectType::ObjectDomain => Some(ObjectKind::Type),
                _ => None,
            };
            if let Some(kind) = kind {
                let old = s.object.as_deref().and_then(|o| object_name(kind, o));
                if let Some(old) = old {
                    facts.used.insert(old.clone());
                    facts.object_renames.push((old, s.newname.clone()));
                }
                return;
            }
            let Some(rel) = s.relation.as_ref().map(range_var) else {
                return;
            };
            let renamed = TableRef {
                schema: rel.schema.clone(),
                name: s.newname.clone(),
            };
            match ObjectType::try_from(s.rename_type).unwrap_or(ObjectType::Undefined) {
                ObjectType::ObjectIndex => {
                    facts.index_uses.insert(rel.clone());
                    facts.index_renames.push((rel, renamed));
                }
                ObjectType::ObjectSequence => {}
                ObjectType::ObjectTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectForeignTable => {
                    facts.touched.insert(rel.clone());
                    facts.renames.push((rel, renamed));
                }
                // Columns, constraints, triggers, policies, rules: of the relation.
                _ => {
                    facts.touched.insert(rel);
                }
            }
        }
        NodeEnum::CommentStmt(s) => {
            let objtype = ObjectType::try_from(s.objtype).unwrap_or(ObjectType::Undefined);
            let names = s.object.as_ref().map(|o| name_list(o)).unwrap_or_default();
            match objtype {
                ObjectType::ObjectTable | ObjectType::ObjectView | ObjectType::ObjectMatview => {
                    facts.touched.extend(qualified(&names))
                }
                // table.column or schema.table.column
                ObjectType::ObjectColumn if names.len() >= 2 => {
                    facts.touched.extend(qualified(&names[..names.len() - 1]))
                }
                ObjectType::ObjectIndex => facts.index_uses.extend(qualified(&names)),
                ObjectType::ObjectFunction
                | ObjectType::ObjectProcedure
                | ObjectType::ObjectRoutine => facts.used.extend(
                    s.object
                        .as_deref()
                        .and_then(|o| object_name(ObjectKind::Function, o)),
                ),
                ObjectType::ObjectType | ObjectType::ObjectDomain => facts.used.extend(
                    s.object
                        .as_deref()
                        .and_then(|o| object_name(ObjectKind::Type, o)),
                ),
                _ => {}
            }
        }
        NodeEnum::DropStmt(s) => {
            let objtype = ObjectType::try_from(s.remove_type).unwrap_or(ObjectType::Undefined);
            for o in &s.objects {
                let names = name_list(o);
                match objtype {
                    ObjectType::ObjectTable
                    | ObjectType::ObjectView
                    | ObjectType::ObjectMatview
                    | ObjectType::ObjectForeignTable => {
                        if let Some(t) = qualified(&names) {
                            facts.touched.insert(t.clone());
                            facts.dropped.insert(t);
                        }
                    }
                    // The last name is the trigger's, rule's or policy's.
                    ObjectType::ObjectTrigger
                    | ObjectType::ObjectRule
                    | ObjectType::ObjectPolicy
                        if names.len() >= 2 =>
                    {
                        facts.touched.extend(qualified(&names[..names.len() - 1]))
                    }
                    ObjectType::ObjectIndex => facts.index_uses.extend(qualified(&names)),
                    ObjectType::ObjectFunction
                    | ObjectType::ObjectProcedure
                    | ObjectType::ObjectRoutine => {
                        if let Some(f) = object_name(ObjectKind::Function, o) {
                            facts.used.insert(f.clone());
                            facts.object_drops.insert(f);
                        }
                    }
                    ObjectType::ObjectType | ObjectType::ObjectDomain => {
                        if let Some(t) = object_name(ObjectKind::Type, o) {
                            facts.used.insert(t.clone());
                            facts.object_drops.insert(t);
                        }
                    }
                    _ => {}
                }
            }
        }
        NodeEnum::ViewStmt(s) => {
            if let Some(view) = &s.view {
                let reads = s.query.as_deref().map(reads).unwrap_or_default();
                facts.views.push((range_var(view), reads));
            }
        }
        NodeEnum::CreateTableAsStmt(s) => {
            let target = s.into.as_ref().and_then(|i| i.rel.as_ref()).map(range_var);
            if let Some(target) = target {
                let reads = s.query.as_deref().map(reads).unwrap_or_default();
                facts.views.push((target, reads));
            }
        }
        NodeEnum::ReindexStmt(s) => {
            if let Some(rel) = s.relation.as_ref().map(range_var) {
                let kind = protobuf::ReindexObjectType::try_from(s.kind);
                if kind == Ok(protobuf::ReindexObjectType::ReindexObjectIndex) {
                    facts.index_uses.insert(rel);
                } else {
                    facts.touched.insert(rel);
                }
            }
        }
        NodeEnum::DoStmt(s) => {
            for arg in &s.args {
                if let Some(NodeEnum::DefElem(d)) = &arg.node {
                    if d.defname == "as" {
                        if let Some(NodeEnum::String(body)) =
                            d.arg.as_ref().and_then(|a| a.node.as_ref())
                        {
                            do_block(&body.sval, facts, nested);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The relations a view's or `CREATE TABLE AS`'s query reads.
fn reads(query: &protobuf::Node) -> BTreeSet<TableRef> {
    let Some(node) = query.node.as_ref() else {
        return BTreeSet::new();
    };
    node.nodes()
        .into_iter()
        .filter_map(|(n, ..)| match n {
            NodeRef::RangeVar(v) => Some(range_var(v)),
            _ => None,
        })
        .collect()
}

/// `diesel_manage_updated_at('orders')`, diesel's helper installing an
/// `updated_at` trigger: it touches the table it names.
fn managed_table(f: &protobuf::FuncCall) -> Option<TableRef> {
    let name = f.funcname.last().and_then(|n| match &n.node {
        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
        _ => None,
    })?;
    if name != "diesel_manage_updated_at" {
        return None;
    }
    let mut arg = f.args.first()?.node.as_ref()?;
    if let NodeEnum::TypeCast(c) = arg {
        arg = c.arg.as_ref()?.node.as_ref()?;
    }
    let NodeEnum::AConst(c) = arg else {
        return None;
    };
    let Some(protobuf::a_const::Val::Sval(s)) = &c.val else {
        return None;
    };
    // A regclass literal: unquoted parts fold to lower case.
    let parts: Vec<String> = s
        .sval
        .split('.')
        .map(
            |p| match p.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
                Some(quoted) => quoted.to_string(),
                None => p.to_ascii_lowercase(),
            },
        )
        .collect();
    qualified(&parts)
}

fn column_def(from: &TableRef, col: &protobuf::ColumnDef, facts: &mut StatementFacts) {
    for c in &col.constraints {
        if let Some(NodeEnum::Constraint(c)) = &c.node {
            constraint(from, c, facts);
        }
    }
}

/// A constraint of table `from`: a foreign key, or a named constraint
/// backed by an index of the same name.
fn constraint(from: &TableRef, c: &protobuf::Constraint, facts: &mut StatementFacts) {
    match ConstrType::try_from(c.contype) {
        Ok(ConstrType::ConstrForeign) => {
            if let Some(to) = &c.pktable {
                facts.foreign_keys.insert((from.clone(), range_var(to)));
            }
        }
        Ok(ConstrType::ConstrPrimary | ConstrType::ConstrUnique | ConstrType::ConstrExclusion) => {
            let name = if c.indexname.is_empty() {
                &c.conname
            } else {
                &c.indexname
            };
            if !name.is_empty() {
                let index = TableRef {
                    schema: from.schema.clone(),
                    name: name.clone(),
                };
                facts.indexes.push((index, from.clone()));
            }
        }
        _ => {}
    }
}

/// The statements of a `DO` block, found by PostgreSQL's PL/pgSQL parser,
/// as statements of their own after the block's, and the relations its
/// queries and conditions read (`IF EXISTS (SELECT … FROM orders)`).
/// Statements it runs through dynamic `EXECUTE` strings cannot be seen; a
/// migration that only does that must declare its scope.
fn do_block(body: &str, facts: &mut StatementFacts, nested: &mut SqlFacts) {
    let Ok(tree) = pg_query::parse_plpgsql(&wrap_plpgsql(body, "void")) else {
        return;
    };
    let mut queries = Vec::new();
    collect_queries(&tree, &mut queries);
    let mut calls = BTreeSet::new();
    for query in queries {
        // Conditions and assignments are expressions, not statements; they
        // only read, and are read as `SELECT <expression>`.
        if analyze_into(&query, nested).is_err() {
            let _ = references(&format!("SELECT {query}"), &mut facts.reads, &mut calls);
        } else {
            let _ = references(&query, &mut facts.reads, &mut calls);
        }
    }
    facts.calls.extend(calls);
}

/// `body` as the body of a PL/pgSQL function returning `returns`, under a
/// dollar quote it does not contain.
fn wrap_plpgsql(body: &str, returns: &str) -> String {
    let mut tag = String::from("appschema");
    while body.contains(&format!("${tag}$")) {
        tag.push('_');
    }
    format!(
        "CREATE FUNCTION appschema_body() RETURNS {returns} AS ${tag}${body}${tag}$ LANGUAGE plpgsql"
    )
}

/// The relations and functions `sql` names (every statement, read or written).
fn references(
    sql: &str,
    relations: &mut BTreeSet<TableRef>,
    calls: &mut BTreeSet<TableRef>,
) -> Result<(), String> {
    let parsed = pg_query::parse(sql).map_err(parse_message)?;
    for raw in &parsed.protobuf.stmts {
        if let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
            node_references(node, relations, calls);
        }
    }
    Ok(())
}

fn node_references(
    node: &NodeEnum,
    relations: &mut BTreeSet<TableRef>,
    calls: &mut BTreeSet<TableRef>,
) {
    for (n, ..) in node.nodes() {
        match n {
            NodeRef::RangeVar(v) => {
                relations.insert(range_var(v));
            }
            NodeRef::FuncCall(f) => {
                calls.extend(qualified(&strings(&f.funcname)));
            }
            _ => {}
        }
    }
}

/// What a function's body names: a PL/pgSQL body through PostgreSQL's
/// PL/pgSQL parser (every query and expression in it), a `LANGUAGE sql`
/// body (quoted or `BEGIN ATOMIC`) as SQL. Other languages name nothing
/// the planner can see.
fn function_body(s: &protobuf::CreateFunctionStmt, text: &str) -> Body {
    let mut body = Body::default();
    if let Some(node) = s.sql_body.as_ref().and_then(|b| b.node.as_ref()) {
        node_references(node, &mut body.relations, &mut body.calls);
        return body;
    }
    let option = |name: &str| {
        s.options.iter().find_map(|o| match &o.node {
            Some(NodeEnum::DefElem(d)) if d.defname == name => d.arg.as_deref(),
            _ => None,
        })
    };
    let language = option("language").and_then(|a| match &a.node {
        Some(NodeEnum::String(l)) => Some(l.sval.to_ascii_lowercase()),
        _ => None,
    });
    let source = option("as")
        .map(name_list)
        .and_then(|parts| parts.into_iter().next());
    let Some(source) = source else {
        return body;
    };
    match language.as_deref() {
        Some("sql") => {
            let _ = references(&source, &mut body.relations, &mut body.calls);
        }
        Some("plpgsql") => {
            // The statement itself first (a trigger function's `NEW` and
            // `OLD` exist only with its real return type), else the body
            // alone.
            let tree = pg_query::parse_plpgsql(text)
                .or_else(|_| pg_query::parse_plpgsql(&wrap_plpgsql(&source, "trigger")));
            if let Ok(tree) = tree {
                let mut queries = Vec::new();
                collect_queries(&tree, &mut queries);
                for query in queries {
                    if references(&query, &mut body.relations, &mut body.calls).is_err() {
                        let _ = references(
                            &format!("SELECT {query}"),
                            &mut body.relations,
                            &mut body.calls,
                        );
                    }
                }
            }
        }
        _ => {}
    }
    body
}

fn object(kind: ObjectKind, name: TableRef) -> ObjectRef {
    ObjectRef { kind, name }
}

fn created_type(names: &[protobuf::Node], facts: &mut StatementFacts) {
    if let Some(t) = qualified(&strings(names)) {
        facts
            .created
            .push((object(ObjectKind::Type, t), Body::default()));
    }
}

fn function_name(f: &protobuf::ObjectWithArgs) -> Option<ObjectRef> {
    qualified(&strings(&f.objname)).map(|n| object(ObjectKind::Function, n))
}

/// The function (an `ObjectWithArgs`) or type (a `TypeName` or a name
/// list) a `DROP`, `COMMENT ON` or `ALTER … RENAME` names.
fn object_name(kind: ObjectKind, node: &protobuf::Node) -> Option<ObjectRef> {
    let names = match &node.node {
        Some(NodeEnum::ObjectWithArgs(f)) => strings(&f.objname),
        Some(NodeEnum::TypeName(t)) => strings(&t.names),
        _ => name_list(node),
    };
    qualified(&names).map(|n| object(kind, n))
}

/// The strings of a name list (`funcname`, `type_name`, …).
fn strings(nodes: &[protobuf::Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| match &n.node {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
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

/// Checks SQL meant to run inside a transaction appschema opens (one per
/// tenant, `appschema-cli exec`): it must parse, and hold no statement that
/// ends or opens a transaction (`COMMIT`, `ROLLBACK`, `BEGIN`, …; a
/// savepoint is fine), which would commit part of a tenant's work and run
/// the rest outside any transaction. The error is PostgreSQL's syntax error,
/// or names the statement.
///
/// ```
/// use appschema_planner::sql::check_in_transaction;
/// assert!(check_in_transaction("UPDATE orders SET total = 0; SAVEPOINT s").is_ok());
/// assert!(check_in_transaction("UPDATE orders SET total = 0; COMMIT").is_err());
/// ```
pub fn check_in_transaction(sql: &str) -> Result<(), String> {
    use protobuf::TransactionStmtKind as K;
    let parsed = pg_query::parse(sql).map_err(parse_message)?;
    for raw in &parsed.protobuf.stmts {
        if let Some(NodeEnum::TransactionStmt(t)) = raw.stmt.as_ref().and_then(|s| s.node.as_ref())
        {
            let kind = K::try_from(t.kind).unwrap_or(K::Undefined);
            if !matches!(
                kind,
                K::TransStmtSavepoint | K::TransStmtRelease | K::TransStmtRollbackTo
            ) {
                let start = usize::try_from(raw.stmt_location).unwrap_or(0);
                let len = usize::try_from(raw.stmt_len).unwrap_or(0);
                let text = if len == 0 {
                    &sql[start.min(sql.len())..]
                } else {
                    &sql[start.min(sql.len())..(start + len).min(sql.len())]
                };
                return Err(format!(
                    "`{}` ends or opens a transaction: each tenant's SQL already runs in a transaction of its own; remove it",
                    text.trim()
                ));
            }
        }
    }
    Ok(())
}

/// The form of a `run_in_transaction = false` migration that runs inside
/// the transaction creating a new, empty schema (provisioning a tenant):
///
/// - `CONCURRENTLY` is removed from `CREATE INDEX`, `DROP INDEX`,
///   `REINDEX` and `DETACH PARTITION`: it only avoids blocking writers of a
///   table that has some, and a table created in the same transaction has
///   none (nor can another session see it);
/// - `VACUUM` is left out: an empty schema has nothing to vacuum;
/// - statements that no transaction may hold and that are no schema's
///   business (`CREATE DATABASE`, `ALTER SYSTEM`, tablespaces,
///   subscriptions) are refused, naming the statement.
///
/// Every rewrite is checked: the rewritten statement must parse to the
/// original's tree with the `concurrent` flag cleared (compared through
/// PostgreSQL's deparser), else the statement is refused.
///
/// ```
/// let sql = "CREATE INDEX CONCURRENTLY o_idx ON orders (id);\nVACUUM orders;";
/// assert_eq!(
///     appschema_planner::sql::new_schema_form(sql).unwrap(),
///     "CREATE INDEX  o_idx ON orders (id);\n"
/// );
/// ```
pub fn new_schema_form(sql: &str) -> Result<String, String> {
    let mut out = String::new();
    for statement in split_statements(sql)? {
        if let Some(s) = statement_for_new_schema(&statement)? {
            out.push_str(&s);
            out.push_str(";\n");
        }
    }
    Ok(out)
}

fn statement_for_new_schema(statement: &str) -> Result<Option<String>, String> {
    let mut parsed = pg_query::parse(statement).map_err(parse_message)?.protobuf;
    let Some(node) = parsed
        .stmts
        .first_mut()
        .and_then(|s| s.stmt.as_mut())
        .and_then(|n| n.node.as_mut())
    else {
        return Ok(Some(statement.to_string()));
    };
    let refuse = |what: &str| {
        Err(format!(
            "`{statement}` ({what}) cannot run inside a transaction"
        ))
    };
    let concurrent = match node {
        NodeEnum::IndexStmt(s) => std::mem::take(&mut s.concurrent),
        NodeEnum::DropStmt(s) => std::mem::take(&mut s.concurrent),
        NodeEnum::ReindexStmt(s) => {
            let before = s.params.len();
            s.params.retain(
                |p| !matches!(&p.node, Some(NodeEnum::DefElem(d)) if d.defname == "concurrently"),
            );
            s.params.len() != before
        }
        NodeEnum::AlterTableStmt(s) => {
            let mut any = false;
            for cmd in &mut s.cmds {
                if let Some(NodeEnum::AlterTableCmd(cmd)) = &mut cmd.node {
                    if let Some(NodeEnum::PartitionCmd(p)) =
                        cmd.def.as_mut().and_then(|d| d.node.as_mut())
                    {
                        any |= std::mem::take(&mut p.concurrent);
                    }
                }
            }
            any
        }
        NodeEnum::VacuumStmt(_) => return Ok(None),
        NodeEnum::CreatedbStmt(_) | NodeEnum::DropdbStmt(_) => return refuse("a database"),
        NodeEnum::AlterSystemStmt(_) => return refuse("server configuration"),
        NodeEnum::CreateTableSpaceStmt(_) | NodeEnum::DropTableSpaceStmt(_) => {
            return refuse("a tablespace")
        }
        NodeEnum::CreateSubscriptionStmt(_)
        | NodeEnum::AlterSubscriptionStmt(_)
        | NodeEnum::DropSubscriptionStmt(_) => return refuse("a subscription"),
        _ => false,
    };
    if !concurrent {
        return Ok(Some(statement.to_string()));
    }
    let expected = pg_query::deparse(&parsed).map_err(|e| e.to_string())?;
    let scanned = pg_query::scan(statement).map_err(parse_message)?;
    let tokens = &scanned.tokens;
    let text = |i: usize| {
        tokens
            .get(i)
            .map_or("", |t| &statement[t.start as usize..t.end as usize])
    };
    for (i, token) in tokens.iter().enumerate() {
        if token.token != protobuf::Token::Concurrently as i32 {
            continue;
        }
        // The keyword alone, or with the comma or parentheses of an
        // option list (`REINDEX (CONCURRENTLY, VERBOSE)`, `(CONCURRENTLY)`).
        let before = i.checked_sub(1);
        let mut spans = vec![(i, i)];
        if text(i + 1) == "," {
            spans.push((i, i + 1));
        }
        if let Some(b) = before {
            if text(b) == "," {
                spans.push((b, i));
            }
            if text(b) == "(" && text(i + 1) == ")" {
                spans.push((b, i + 1));
            }
        }
        for (first, last) in spans {
            let start = tokens[first].start as usize;
            let end = tokens[last].end as usize;
            let candidate = format!("{}{}", &statement[..start], &statement[end..]);
            let same = pg_query::parse(&candidate)
                .ok()
                .and_then(|p| p.deparse().ok())
                .is_some_and(|d| d == expected);
            if same {
                return Ok(Some(candidate));
            }
        }
    }
    Err(format!(
        "cannot remove CONCURRENTLY from `{statement}` without changing it"
    ))
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
            .touched()
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
            .foreign_keys()
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
    fn the_new_schema_form_drops_concurrently_and_vacuum_and_keeps_the_rest() {
        let sql = "-- comment\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS \"concurrently\" ON t (a);\n\
                   DROP INDEX CONCURRENTLY IF EXISTS old_idx;\n\
                   REINDEX (CONCURRENTLY) INDEX i;\n\
                   REINDEX INDEX CONCURRENTLY i;\n\
                   REINDEX (VERBOSE, CONCURRENTLY) TABLE t;\n\
                   ALTER TABLE p DETACH PARTITION p1 CONCURRENTLY;\n\
                   VACUUM ANALYZE t;\n\
                   CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;";
        let out = new_schema_form(sql).unwrap();
        assert!(
            !out.to_ascii_uppercase().contains("CONCURRENTLY ON"),
            "{out}"
        );
        assert!(out.contains("\"concurrently\" ON t (a)"), "{out}");
        assert!(!out.contains("VACUUM"), "{out}");
        assert!(out.contains("SELECT 1; $$ LANGUAGE sql"), "{out}");
        for statement in split_statements(&out).unwrap() {
            let tree = pg_query::parse(&statement).unwrap();
            let text = format!("{:?}", tree.protobuf);
            assert!(!text.contains("concurrent: true"), "{statement}");
            assert!(!text.contains("\"concurrently\", arg: None"), "{statement}");
        }
        assert_eq!(split_statements(&out).unwrap().len(), 7);
    }

    fn without_concurrently(sql: &str) -> String {
        let mut parsed = pg_query::parse(sql).unwrap().protobuf;
        match parsed.stmts[0].stmt.as_mut().and_then(|n| n.node.as_mut()) {
            Some(NodeEnum::IndexStmt(s)) => s.concurrent = false,
            Some(NodeEnum::DropStmt(s)) => s.concurrent = false,
            _ => unreachable!(),
        }
        pg_query::deparse(&parsed).unwrap()
    }

    /// Random index statements (a fixed seed: the same cases every run).
    #[test]
    fn the_new_schema_form_of_an_index_statement_is_the_same_statement_without_concurrently() {
        use proptest::prelude::*;
        let statements = (
            "[a-z_][a-z0-9_]{0,8}|\"[A-Za-z ]{1,8}\"",
            "[a-z_][a-z0-9_]{0,8}",
            proptest::collection::vec("[a-z_][a-z0-9_]{0,5}", 1..4),
            any::<(bool, bool, bool)>(),
        )
            .prop_map(|(index, table, columns, (unique, if_exists, drop))| {
                if drop {
                    let if_exists = if if_exists { "IF EXISTS " } else { "" };
                    format!("DROP INDEX CONCURRENTLY {if_exists}{index}")
                } else {
                    format!(
                        "CREATE {}INDEX CONCURRENTLY {}{index} ON {table} ({})",
                        if unique { "UNIQUE " } else { "" },
                        if if_exists { "IF NOT EXISTS " } else { "" },
                        columns.join(", ")
                    )
                }
            });
        proptest::test_runner::TestRunner::deterministic()
            .run(&statements, |sql| {
                // Generated names may be keywords: only valid statements count.
                if pg_query::parse(&sql).is_err() {
                    return Ok(());
                }
                let out = new_schema_form(&sql).unwrap();
                let statement = out.trim_end().trim_end_matches(';');
                prop_assert_eq!(
                    pg_query::parse(statement).unwrap().deparse().unwrap(),
                    without_concurrently(&sql)
                );
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn the_new_schema_form_refuses_what_no_transaction_may_hold() {
        let err = new_schema_form("CREATE DATABASE other").unwrap_err();
        assert_eq!(
            err,
            "`CREATE DATABASE other` (a database) cannot run inside a transaction"
        );
    }

    fn body_names(sql: &str) -> (Vec<String>, Vec<String>) {
        let facts = analyze(sql).unwrap();
        let (_, body) = &facts.statements[0].created[0];
        (
            body.relations.iter().map(ToString::to_string).collect(),
            body.calls.iter().map(ToString::to_string).collect(),
        )
    }

    #[test]
    fn function_bodies_name_the_tables_and_functions_they_use() {
        // PL/pgSQL: queries, conditions and assignments, NEW of a trigger.
        let (tables, calls) = body_names(
            "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$
             DECLARE n int := (SELECT count(*) FROM items);
             BEGIN
               IF EXISTS (SELECT 1 FROM public.plans WHERE id = NEW.plan_id) THEN
                 UPDATE orders SET x = helper(NEW.id);
               END IF;
               NEW.y := 1;
               RETURN NEW;
             END $$",
        );
        assert_eq!(tables, ["items", "orders", "public.plans"]);
        assert!(calls.contains(&"helper".to_string()), "{calls:?}");
        let (tables, _) = body_names(
            "CREATE FUNCTION g(x int) RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM orders WHERE id = x'",
        );
        assert_eq!(tables, ["orders"]);
        let (tables, _) = body_names(
            "CREATE FUNCTION h() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM items; END",
        );
        assert_eq!(tables, ["items"]);
        let (tables, calls) =
            body_names("CREATE FUNCTION c() RETURNS int LANGUAGE c AS 'lib', 'sym'");
        assert!(tables.is_empty() && calls.is_empty());
    }

    #[test]
    fn functions_types_schemas_and_extensions_are_reported_statement_by_statement() {
        let facts = analyze(
            "DROP VIEW v; CREATE VIEW v AS SELECT 1; CREATE SCHEMA utils; CREATE EXTENSION pgcrypto;
             CREATE TYPE mood AS ENUM ('a'); ALTER TYPE mood ADD VALUE 'b'; DROP TYPE mood;
             ALTER FUNCTION f() STABLE; ALTER FUNCTION f() RENAME TO g; DROP FUNCTION g(int);
             CREATE TRIGGER t AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION public.touch();",
        )
        .unwrap();
        let s = &facts.statements;
        assert_eq!(s.len(), 11);
        assert_eq!(s[0].dropped.len(), 1);
        assert_eq!(s[1].views.len(), 1);
        assert_eq!(s[2].created[0].0.to_string(), "schema utils");
        assert!(s[3].extensions.contains("pgcrypto"));
        assert_eq!(s[4].created[0].0.to_string(), "type mood");
        assert_eq!(s[5].used.first().unwrap().to_string(), "type mood");
        assert_eq!(s[6].object_drops.first().unwrap().to_string(), "type mood");
        assert_eq!(s[7].used.first().unwrap().to_string(), "f()");
        assert_eq!(s[8].object_renames[0].1, "g");
        assert_eq!(s[9].object_drops.first().unwrap().to_string(), "g()");
        assert_eq!(s[10].calls.first().unwrap().to_string(), "public.touch");
        assert_eq!(s[10].triggers.first().unwrap().to_string(), "public.orders");
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
