//! Attribute macros of [appschema](https://docs.rs/appschema), re-exported by
//! the facade as `#[appschema::shared]` and `#[appschema::isolated]`.
