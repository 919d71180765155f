//! `#[appschema::isolated]`: tables stay unqualified; qualified ones are refused.

use proc_macro2::TokenStream;

use crate::module::{self, Scope};

/// Expands `#[appschema::isolated(attr)] item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    module::expand(Scope::Isolated, attr, item)
}
