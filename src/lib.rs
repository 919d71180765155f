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
//! (`appschema-derive`).
//!
//! ```
//! use appschema::Scope;
//! assert_eq!(Scope::Isolated.to_string(), "isolated");
//! ```
#![warn(missing_docs)]

pub use appschema_core::*;

/// tower/axum integration (feature `axum`): resolve each request's tenant.
#[cfg(feature = "axum")]
pub use appschema_axum as axum;
