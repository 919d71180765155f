//! Reads the scope of every table from the application's schema *source
//! files*: the modules marked `#[appschema::shared]` / `#[appschema::isolated]`
//! / `#[appschema::both]` and the `diesel::table!` invocations inside them (or in the
//! `diesel print-schema` file their `file = "…"` argument names).
//!
//! The migration planner runs where the application's crate is not compiled
//! yet (its `build.rs`, the CLI), so it cannot read the metadata the macros
//! emit; it reads the same source the macros read instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Scope;

/// The shared schema used when a shared module names none.
pub const DEFAULT_SHARED_SCHEMA: &str = "public";

/// Where one marked table lives, and where it was marked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedTable {
    /// Shared, isolated or both.
    pub scope: Scope,
    /// For shared tables, the schema they live in.
    pub schema: Option<String>,
    /// The source file that marked it.
    pub source: PathBuf,
}

/// Every marked table, by SQL name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableScopes {
    tables: BTreeMap<String, MarkedTable>,
}

/// Why the schema source could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaSourceError {
    /// A file could not be read.
    #[error("cannot read schema file `{path}`: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file is not valid Rust.
    #[error("schema file `{path}` is not valid Rust: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// syn's message.
        message: String,
    },
    /// A `table!` invocation could not be read.
    #[error("schema file `{path}`: cannot read a `table!` invocation: {message}")]
    Table {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A table name is marked both shared and isolated.
    #[error(
        "table `{table}` is marked both shared (in `{shared}`) and isolated (in `{isolated}`): \
         a table lives in one scope; rename one of them or remove one marking"
    )]
    BothScopes {
        /// The table.
        table: String,
        /// Where it is marked shared.
        shared: PathBuf,
        /// Where it is marked isolated.
        isolated: PathBuf,
    },
    /// A table name is marked in two different scopes, one of them
    /// `#[appschema::both]`.
    #[error(
        "table `{table}` is marked {first_scope} (in `{first}`) and {second_scope} (in `{second}`): \
         a table has one marking; a table in the shared schema and in every tenant is marked \
         only #[appschema::both]; remove the other marking or rename one of them"
    )]
    ConflictingScopes {
        /// The table.
        table: String,
        /// The first marking's scope.
        first_scope: Scope,
        /// Where it is marked so.
        first: PathBuf,
        /// The other marking's scope.
        second_scope: Scope,
        /// Where it is marked so.
        second: PathBuf,
    },
}

impl TableScopes {
    /// An empty set: no table marked.
    pub fn new() -> TableScopes {
        TableScopes::default()
    }

    /// Reads every marked module of the given Rust files. `file = "…"` paths
    /// are resolved against `base_dir` (the crate's `CARGO_MANIFEST_DIR`).
    pub fn from_files(
        files: &[PathBuf],
        base_dir: &Path,
    ) -> Result<TableScopes, SchemaSourceError> {
        let mut scopes = TableScopes::new();
        for file in files {
            let text = read(file)?;
            scopes.add_source(&text, file, base_dir)?;
        }
        Ok(scopes)
    }

    /// Reads the marked modules of one Rust source text (`path` names it in
    /// errors).
    pub fn add_source(
        &mut self,
        text: &str,
        path: &Path,
        base_dir: &Path,
    ) -> Result<(), SchemaSourceError> {
        let file = syn::parse_file(text).map_err(|e| SchemaSourceError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        self.add_items(&file.items, path, base_dir)
    }

    fn add_items(
        &mut self,
        items: &[syn::Item],
        path: &Path,
        base_dir: &Path,
    ) -> Result<(), SchemaSourceError> {
        for item in items {
            let syn::Item::Mod(module) = item else {
                continue;
            };
            match marking(&module.attrs, path)? {
                Some(mark) => {
                    let mut tables = Vec::new();
                    if let Some((_, items)) = &module.content {
                        collect_tables(items, path, &mut tables)?;
                    }
                    let mut source = path.to_path_buf();
                    if let Some(file) = &mark.file {
                        source = base_dir.join(file);
                        let text = read(&source)?;
                        let parsed =
                            syn::parse_file(&text).map_err(|e| SchemaSourceError::Syntax {
                                path: source.clone(),
                                message: e.to_string(),
                            })?;
                        collect_tables(&parsed.items, &source, &mut tables)?;
                    }
                    for (schema, name) in tables {
                        let schema = match mark.scope {
                            Scope::Isolated | Scope::Both => None,
                            Scope::Shared => Some(
                                schema
                                    .or_else(|| mark.schema.clone())
                                    .unwrap_or_else(|| DEFAULT_SHARED_SCHEMA.to_string()),
                            ),
                        };
                        self.insert(
                            name,
                            MarkedTable {
                                scope: mark.scope,
                                schema,
                                source: source.clone(),
                            },
                        )?;
                    }
                }
                None => {
                    if let Some((_, items)) = &module.content {
                        self.add_items(items, path, base_dir)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Marks one table; a table marked in both scopes is an error.
    pub fn insert(&mut self, name: String, table: MarkedTable) -> Result<(), SchemaSourceError> {
        if let Some(existing) = self.tables.get(&name) {
            if existing.scope != table.scope
                && (existing.scope == Scope::Both || table.scope == Scope::Both)
            {
                return Err(SchemaSourceError::ConflictingScopes {
                    table: name,
                    first_scope: existing.scope,
                    first: existing.source.clone(),
                    second_scope: table.scope,
                    second: table.source,
                });
            }
            if existing.scope != table.scope {
                let (shared, isolated) = if existing.scope == Scope::Shared {
                    (existing.source.clone(), table.source)
                } else {
                    (table.source, existing.source.clone())
                };
                return Err(SchemaSourceError::BothScopes {
                    table: name,
                    shared,
                    isolated,
                });
            }
            return Ok(());
        }
        self.tables.insert(name, table);
        Ok(())
    }

    /// The marking of table `name` (its SQL name, unqualified).
    pub fn get(&self, name: &str) -> Option<&MarkedTable> {
        self.tables.get(name)
    }

    /// Every marked table, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MarkedTable)> {
        self.tables.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many tables are marked.
    pub fn len(&self) -> usize {
        self.tables.len()
    }

    /// Whether no table is marked.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

fn read(path: &Path) -> Result<String, SchemaSourceError> {
    std::fs::read_to_string(path).map_err(|error| SchemaSourceError::Io {
        path: path.to_path_buf(),
        error,
    })
}

struct Marking {
    scope: Scope,
    schema: Option<String>,
    file: Option<String>,
}

/// `#[appschema::shared(…)]` / `#[appschema::isolated(…)]` /
/// `#[appschema::both(…)]` (also written without the `appschema::` prefix
/// when imported), read by `appschema-marking` as the attribute macros read
/// it: what they refuse is refused here too, with their message.
fn marking(attrs: &[syn::Attribute], path: &Path) -> Result<Option<Marking>, SchemaSourceError> {
    for attr in attrs {
        let Some(scope) = appschema_marking::Scope::of_attribute(attr.path()) else {
            continue;
        };
        let tokens = match &attr.meta {
            syn::Meta::List(list) => list.tokens.clone(),
            _ => proc_macro2::TokenStream::new(),
        };
        let args = appschema_marking::MarkingArgs::parse(scope, tokens).map_err(|e| {
            SchemaSourceError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string(),
            }
        })?;
        return Ok(Some(Marking {
            scope: match scope {
                appschema_marking::Scope::Shared => Scope::Shared,
                appschema_marking::Scope::Isolated => Scope::Isolated,
                appschema_marking::Scope::Both => Scope::Both,
            },
            schema: args.schema.map(|lit| lit.value()),
            file: args.file.map(|lit| lit.value()),
        }));
    }
    Ok(None)
}

/// Every `table!` invocation in `items`, nested modules included (`diesel
/// print-schema` writes tables of other schemas inside `pub mod <schema>`).
fn collect_tables(
    items: &[syn::Item],
    path: &Path,
    out: &mut Vec<(Option<String>, String)>,
) -> Result<(), SchemaSourceError> {
    for item in items {
        match item {
            syn::Item::Macro(m)
                if m.mac
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "table") =>
            {
                parse_table_macro(m.mac.tokens.clone(), out).map_err(|message| {
                    SchemaSourceError::Table {
                        path: path.to_path_buf(),
                        message,
                    }
                })?;
            }
            syn::Item::Mod(module) => {
                if let Some((_, items)) = &module.content {
                    collect_tables(items, path, out)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The table of one `table! { … }` body, `[schema.]name` and its SQL name,
/// read by `appschema-marking` as the attribute macros read it.
fn parse_table_macro(
    tokens: proc_macro2::TokenStream,
    out: &mut Vec<(Option<String>, String)>,
) -> Result<(), String> {
    let table: appschema_marking::TableDecl = syn::parse2(tokens).map_err(|e| e.to_string())?;
    let schema = table
        .schema
        .as_ref()
        .map(|(schema, _)| syn::ext::IdentExt::unraw(schema).to_string());
    out.push((schema, table.sql_name()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(src: &str) -> Result<TableScopes, SchemaSourceError> {
        let mut s = TableScopes::new();
        s.add_source(src, Path::new("src/schema.rs"), Path::new("."))?;
        Ok(s)
    }

    #[test]
    fn marked_modules_give_each_table_its_scope_and_shared_schema() {
        let s = scopes(
            r#"
            #[appschema::shared]
            pub mod shared {
                diesel::table! { public.plans (id) { id -> Int8, name -> Text } }
                diesel::table! { #[sql_name = "Users"] users (id) { id -> Int8 } }
            }
            #[appschema::shared(schema = "billing")]
            pub mod billing { diesel::table! { invoices (id) { id -> Int8 } } }
            #[appschema::isolated]
            pub mod tenant {
                diesel::table! {
                    use diesel::sql_types::*;
                    orders (id) { id -> Int8, plan_id -> Int8 }
                }
                table! { r#type (id) { id -> Int8 } }
            }
            mod unmarked { diesel::table! { other (id) { id -> Int8 } } }
            "#,
        )
        .unwrap();
        assert_eq!(s.get("plans").unwrap().scope, Scope::Shared);
        assert_eq!(s.get("plans").unwrap().schema.as_deref(), Some("public"));
        assert_eq!(s.get("Users").unwrap().scope, Scope::Shared);
        assert_eq!(
            s.get("invoices").unwrap().schema.as_deref(),
            Some("billing")
        );
        assert_eq!(s.get("orders").unwrap().scope, Scope::Isolated);
        assert_eq!(s.get("orders").unwrap().schema, None);
        assert_eq!(s.get("type").unwrap().scope, Scope::Isolated);
        assert!(s.get("other").is_none());
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn a_table_marked_in_both_scopes_is_refused_naming_both_files() {
        let err = scopes(
            r#"
            #[appschema::shared] mod a { diesel::table! { plans (id) { id -> Int8 } } }
            #[appschema::isolated] mod b { diesel::table! { plans (id) { id -> Int8 } } }
            "#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("table `plans` is marked both shared"), "{msg}");
    }

    /// The planner reads markings with the attribute macros' parser
    /// (appschema-marking): what the macros refuse, it refuses with their
    /// message, instead of planning with a marking that does not compile.
    #[test]
    fn markings_the_attribute_macros_refuse_are_refused_with_their_message() {
        for (src, expected) in [
            (
                r#"#[appschema::isolated(schema = "billing")] mod t { diesel::table! { orders (id) { id -> Int8 } } }"#,
                "`schema` is not an argument of #[appschema::isolated]",
            ),
            (
                r#"#[appschema::both(schema = "billing")] mod t { diesel::table! { orders (id) { id -> Int8 } } }"#,
                "`schema` is not an argument of #[appschema::both]",
            ),
            (
                r#"#[appschema::shared(schema = "a", schema = "b")] mod t { diesel::table! { plans (id) { id -> Int8 } } }"#,
                "`schema` is given twice",
            ),
            (
                r#"#[appschema::shared] mod t { diesel::table! { public.plans (id) { id -> Int8, name } } }"#,
                "schema file `src/schema.rs`: cannot read a `table!` invocation",
            ),
        ] {
            let msg = scopes(src).unwrap_err().to_string();
            assert!(msg.contains(expected), "{src}\n{msg}");
        }
    }

    #[test]
    fn the_file_argument_reads_print_schema_output_relative_to_the_crate() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("src/tenant_schema.rs"),
            "// @generated\ndiesel::table! { orders (id) { id -> Int8 } }\n\
             diesel::table! { items (id) { id -> Int8 } }\n\
             diesel::joinable!(items -> orders (id));\n",
        )
        .unwrap();
        let mut s = TableScopes::new();
        s.add_source(
            r#"#[appschema::isolated(file = "src/tenant_schema.rs")] pub mod tenant {}"#,
            Path::new("src/lib.rs"),
            dir.path(),
        )
        .unwrap();
        assert_eq!(s.get("items").unwrap().scope, Scope::Isolated);
        assert_eq!(s.get("orders").unwrap().scope, Scope::Isolated);
    }
}
