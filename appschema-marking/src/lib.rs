//! The syntax of appschema's table markings, read in one place.
//!
//! Two readers need it: the attribute macros (`appschema-derive`, which
//! rewrites and records each marked table at compile time) and the
//! migration planner (`appschema-planner`, which reads the same source files
//! where the application is not compiled yet: its build script, the CLI).
//! Both parse with this crate, so a marking means the same to both.
//!
//! - [`Scope`] and [`MarkingArgs`]: `#[appschema::shared]`,
//!   `#[appschema::shared(schema = "billing")]`, `#[appschema::isolated]`,
//!   `#[appschema::both]`, each with an optional `file = "…"`;
//! - [`TableDecl`]: one `diesel::table!` invocation, just enough of diesel's
//!   grammar to find the table's schema, name and columns.
//!
//! An implementation detail of appschema, versioned with it; applications
//! use the attributes through the `appschema` facade.
//!
//! ```
//! use appschema_marking::{MarkingArgs, Scope, TableDecl};
//!
//! let attribute: syn::Attribute = syn::parse_quote!(#[appschema::shared(schema = "billing")]);
//! let scope = Scope::of_attribute(attribute.path()).unwrap();
//! let syn::Meta::List(list) = &attribute.meta else { unreachable!() };
//! let args = MarkingArgs::parse(scope, list.tokens.clone()).unwrap();
//! assert_eq!((scope, args.schema.unwrap().value()), (Scope::Shared, "billing".to_string()));
//!
//! let table: TableDecl = syn::parse_quote!(billing.invoices (id) { id -> Int8, total -> Numeric });
//! assert_eq!(table.sql_name(), "invoices");
//! assert_eq!(table.schema.as_ref().unwrap().0, "billing");
//! assert_eq!(table.columns()[1].sql_type, "Numeric");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
mod table;

pub use args::{MarkingArgs, Scope, DEFAULT_SHARED_SCHEMA};
pub use table::{Column, TableDecl};
