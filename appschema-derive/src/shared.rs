//! `#[appschema::shared]`: every table becomes schema-qualified.

use proc_macro2::TokenStream;

use crate::module::{self, Scope};

/// Expands `#[appschema::shared(attr)] item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    module::expand(Scope::Shared, attr, item)
}
