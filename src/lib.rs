//! # appschema
//!
//! Schema-per-tenant multi-tenancy for [Diesel](https://diesel.rs) on
//! PostgreSQL: each customer's tables live in that customer's own schema, the
//! tables everyone shares live in `public`, and the application is written
//! once. How a table is marked and which connection a query runs on decide
//! which customer's data it touches.
//!
//! This crate is a facade: it re-exports the runtime library
//! ([`appschema-core`](appschema_core)) and the table-marking attribute macros
//! (`appschema-derive`). The migration planner is not among them: it runs in
//! `appschema-cli` and in build steps, and an application embeds its result
//! ([`include_migrations!`]) from the plan `appschema-cli prepare` writes,
//! with `appschema-build` in its `[build-dependencies]`, so its build needs
//! no libclang.
//!
//! ```
//! use appschema::Scope;
//! assert_eq!(Scope::Isolated.to_string(), "isolated");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use appschema_core::*;

/// Marks an inline module of diesel tables as **shared**: one copy, in the
/// shared schema (`public` unless `schema = "…"` names another), read and
/// written the same way by every tenant.
///
/// Every `table!` inside becomes schema-qualified, so diesel writes
/// `"public"."plans"` whatever the connection's `search_path`. The module
/// also gets `pub const TABLES: &[appschema::TableMeta]` describing its
/// tables.
///
/// ```
/// use diesel::prelude::*;
///
/// #[appschema::shared]
/// pub mod shared {
///     diesel::table! { plans (id) { id -> Int8, name -> Text } }
/// }
///
/// #[appschema::shared(schema = "billing")]
/// pub mod billing {
///     diesel::table! { invoices (id) { id -> Int8, total -> Int8 } }
/// }
///
/// let query = shared::plans::table.select(shared::plans::name);
/// assert_eq!(
///     diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string(),
///     r#"SELECT "public"."plans"."name" FROM "public"."plans" -- binds: []"#,
/// );
/// let query = billing::invoices::table.select(billing::invoices::total);
/// assert_eq!(
///     diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string(),
///     r#"SELECT "billing"."invoices"."total" FROM "billing"."invoices" -- binds: []"#,
/// );
///
/// let plans = &shared::TABLES[0];
/// assert_eq!((plans.name, plans.scope, plans.schema), ("plans", appschema::Scope::Shared, Some("public")));
/// assert_eq!(plans.columns[1].sql_type, "Text");
/// ```
///
/// With `file = "src/schema/shared.rs"` the tables are read at compile time
/// from a file written by `diesel print-schema` (path relative to the
/// package root; cargo rebuilds when the file changes):
///
/// ```ignore
/// #[appschema::shared(file = "src/schema/shared.rs")]
/// pub mod shared {}
/// ```
#[doc(inline)]
pub use appschema_derive::shared;

/// Async tenant-scoped connections on diesel-async (feature `async`;
/// `appschema-async`): `AsyncSharedPool` and the transaction-scoped mode.
#[cfg(feature = "async")]
pub use appschema_async as async_pool;

/// Background jobs that carry the tenant (feature `jobs`;
/// `appschema-jobs`): tenant jobs on the fang queue, resolved by tenant id
/// at run time.
#[cfg(feature = "jobs")]
pub use appschema_jobs as jobs;

/// tower/axum integration (feature `axum`): resolve each request's tenant.
#[cfg(feature = "axum")]
pub use appschema_axum as axum;

/// Marks a module of diesel tables that live in **both** scopes: one copy in
/// the shared schema and one in every tenant schema (per-tenant overrides of
/// shared defaults). Tables stay unqualified, so a tenant connection reads
/// the tenant's copy and a shared connection the shared one; their
/// migrations run in the shared schema and in every tenant.
///
/// ```
/// use diesel::prelude::*;
///
/// #[appschema::both]
/// pub mod both {
///     diesel::table! { settings (key) { key -> Text, value -> Text } }
/// }
///
/// # fn main() {
/// let query = both::settings::table.select(both::settings::value);
/// assert_eq!(
///     diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string(),
///     r#"SELECT "settings"."value" FROM "settings" -- binds: []"#,
/// );
/// assert_eq!(both::TABLES[0].scope, appschema::Scope::Both);
/// assert_eq!(both::TABLES[0].schema, None);
/// # }
/// ```
#[doc(inline)]
pub use appschema_derive::both;
/// Marks an inline module of diesel tables as **isolated**: one copy per
/// tenant, in the tenant's own schema.
///
/// Tables stay unqualified, so diesel writes `"orders"` and PostgreSQL finds
/// the tenant's copy through the connection's `search_path`. A
/// schema-qualified table inside is a compile error. The module also gets
/// `pub const TABLES: &[appschema::TableMeta]` describing its tables.
///
/// Shared and isolated tables join like any diesel tables: bring the shared
/// tables into the isolated module with `use` and declare the relations with
/// `joinable!` and `allow_tables_to_appear_in_same_query!`, as below. That
/// macro declares every pair of the tables it lists, and diesel refuses a
/// pair declared twice in a crate, so list every table that may meet another
/// (isolated and shared) once, in the isolated module.
///
/// ```
/// use diesel::prelude::*;
///
/// #[appschema::shared]
/// pub mod shared {
///     diesel::table! { plans (id) { id -> Int8, name -> Text } }
///     diesel::table! { currencies (code) { code -> Text, symbol -> Text } }
/// }
///
/// #[appschema::isolated]
/// pub mod tenant {
///     use super::shared::{currencies, plans};
///
///     diesel::table! { orders (id) { id -> Int8, plan_id -> Int8, total -> Int8 } }
///     diesel::table! { invoices (id) { id -> Int8, order_id -> Int8, currency -> Text } }
///
///     diesel::joinable!(orders -> plans (plan_id));
///     diesel::joinable!(invoices -> orders (order_id));
///     diesel::joinable!(invoices -> currencies (currency));
///     diesel::allow_tables_to_appear_in_same_query!(orders, invoices, plans, currencies);
/// }
///
/// # fn main() {
/// let query = tenant::orders::table.select(tenant::orders::total);
/// assert_eq!(
///     diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string(),
///     r#"SELECT "orders"."total" FROM "orders" -- binds: []"#,
/// );
/// let join = tenant::orders::table
///     .inner_join(shared::plans::table)
///     .select((tenant::orders::id, shared::plans::name));
/// assert_eq!(
///     diesel::debug_query::<diesel::pg::Pg, _>(&join).to_string(),
///     r#"SELECT "orders"."id", "public"."plans"."name" FROM ("orders" INNER JOIN "public"."plans" ON ("orders"."plan_id" = "public"."plans"."id")) -- binds: []"#,
/// );
/// let invoices = tenant::invoices::table
///     .inner_join(tenant::orders::table.inner_join(shared::plans::table))
///     .inner_join(shared::currencies::table)
///     .select((tenant::invoices::id, shared::plans::name, shared::currencies::symbol));
/// assert_eq!(
///     diesel::debug_query::<diesel::pg::Pg, _>(&invoices).to_string(),
///     r#"SELECT "invoices"."id", "public"."plans"."name", "public"."currencies"."symbol" FROM (("invoices" INNER JOIN ("orders" INNER JOIN "public"."plans" ON ("orders"."plan_id" = "public"."plans"."id")) ON ("invoices"."order_id" = "orders"."id")) INNER JOIN "public"."currencies" ON ("invoices"."currency" = "public"."currencies"."code")) -- binds: []"#,
/// );
/// assert_eq!(tenant::TABLES[0].scope, appschema::Scope::Isolated);
/// assert_eq!(tenant::TABLES[0].schema, None);
/// # }
/// ```
///
/// With `file = "src/schema/tenant.rs"` the tables are read at compile time
/// from a file written by `diesel print-schema` (path relative to the
/// package root; cargo rebuilds when the file changes):
///
/// ```ignore
/// #[appschema::isolated(file = "src/schema/tenant.rs")]
/// pub mod tenant {}
/// ```
#[doc(inline)]
pub use appschema_derive::isolated;
/// The migration planner (feature `planner`; `appschema-planner`): what
/// `appschema-cli` and the planning build step run. Applications need not
/// link it: see `appschema-build` for embedding a prepared plan.
#[cfg(feature = "planner")]
pub use appschema_planner as planner;

/// The README and the book's chapters as doctests: every ```` ```rust ````
/// block in them compiles (and runs unless marked `no_run`), so the
/// documentation cannot drift from the API.
#[cfg(doctest)]
mod book {
    #[doc = include_str!("../README.md")]
    mod readme {}
    #[doc = include_str!("../docs/src/introduction.md")]
    mod introduction {}
    #[doc = include_str!("../docs/src/marking.md")]
    mod marking {}
    #[doc = include_str!("../docs/src/migrations.md")]
    mod migrations {}
    #[doc = include_str!("../docs/src/connections.md")]
    mod connections {}
    #[doc = include_str!("../docs/src/deploying.md")]
    mod deploying {}
    #[doc = include_str!("../docs/src/routing.md")]
    mod routing {}
    #[doc = include_str!("../docs/src/async.md")]
    mod async_ {}
    #[doc = include_str!("../docs/src/provisioning.md")]
    mod provisioning {}
    #[doc = include_str!("../docs/src/moving.md")]
    mod moving {}
    #[doc = include_str!("../docs/src/jobs.md")]
    mod jobs {}
    #[doc = include_str!("../docs/src/operations.md")]
    mod operations {}
    #[doc = include_str!("../docs/src/testing.md")]
    mod testing {}
    #[doc = include_str!("../docs/src/citus.md")]
    mod citus {}
    #[doc = include_str!("../docs/src/comparison.md")]
    mod comparison {}
    #[doc = include_str!("../docs/src/contributing.md")]
    mod contributing {}
}
