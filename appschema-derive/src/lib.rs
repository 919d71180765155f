//! Attribute macros of [appschema](https://docs.rs/appschema), re-exported by
//! the facade as `#[appschema::shared]`, `#[appschema::isolated]` and
//! `#[appschema::both]`.
//!
//! Use them through the facade: the code they emit names `::appschema`
//! (the metadata types) and `::diesel`. The runnable examples are on the
//! facade's re-exports.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;

mod args;
mod both;
mod isolated;
mod module;
mod shared;

#[cfg(test)]
mod expansion_tests;

/// Marks an inline module of diesel tables as **shared**: one copy, in the
/// shared schema (`public` unless `schema = "…"` names another).
///
/// Every `table!` inside is rewritten to be schema-qualified
/// (`plans` becomes `public.plans`), so diesel writes `"public"."plans"` and
/// the query reads the same rows whatever the connection's `search_path`.
///
/// Arguments, all optional:
/// - `schema = "billing"`: the shared schema (default `public`).
/// - `file = "src/schema/shared.rs"`: read the tables from this file, as
///   `diesel print-schema` writes it, at compile time (path relative to
///   `CARGO_MANIFEST_DIR`; cargo rebuilds when it changes). The module's own
///   items are kept after the file's.
///
/// The module also gets `pub const TABLES: &[appschema::TableMeta]`, one entry
/// per table: SQL name, `Scope::Shared`, the schema, and the columns with
/// their diesel SQL types as written.
#[proc_macro_attribute]
pub fn shared(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_or_keep(shared::expand, attr, item)
}

/// Marks an inline module of diesel tables as **isolated**: one copy per
/// tenant, in the tenant's own schema.
///
/// Tables stay unqualified (`"orders"`), so PostgreSQL finds them through the
/// connection's `search_path`, which appschema points at the tenant's schema.
/// A schema-qualified table (`billing.orders`) inside is a compile error.
///
/// Argument, optional: `file = "src/schema/tenant.rs"`, as for `shared`.
///
/// The module also gets `pub const TABLES: &[appschema::TableMeta]`, one entry
/// per table, with `Scope::Isolated` and no schema.
#[proc_macro_attribute]
pub fn isolated(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_or_keep(isolated::expand, attr, item)
}

/// Marks an inline module of diesel tables as living in **both** scopes: one
/// copy in the shared schema and one in every tenant's schema (for example
/// per-tenant overrides of shared defaults).
///
/// Tables stay unqualified (`"settings"`), as in an isolated module: on a
/// tenant connection (path `"<tenant>", public`) PostgreSQL finds the
/// tenant's copy first; on a shared connection (path `public`) it finds the
/// shared copy. Migrations touching these tables run once in the shared
/// schema and in every tenant schema. A schema-qualified table inside is a
/// compile error, and so is `schema = "…"`.
///
/// A separate attribute rather than an option of `shared`: what defines a
/// shared module is that its tables are qualified; these are not, exactly
/// like isolated ones, and the build step reads the marking by its path.
///
/// Argument, optional: `file = "src/schema/both.rs"`, as for `shared`.
///
/// The module also gets `pub const TABLES: &[appschema::TableMeta]`, one entry
/// per table, with `Scope::Both` and no schema.
#[proc_macro_attribute]
pub fn both(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand_or_keep(both::expand, attr, item)
}

/// Runs an expansion; on error, emits the error *and* the item unchanged, so
/// code that uses the module's tables still resolves and one mistake does not
/// cascade into many.
fn expand_or_keep(
    expand: fn(TokenStream2, TokenStream2) -> syn::Result<TokenStream2>,
    attr: TokenStream,
    item: TokenStream,
) -> TokenStream {
    let item = TokenStream2::from(item);
    expand(attr.into(), item.clone())
        .unwrap_or_else(|error| {
            let mut out = error.into_compile_error();
            out.extend(item);
            out
        })
        .into()
}
