//! `#[appschema::both]`: tables stay unqualified, as isolated ones do, and
//! are recorded with `Scope::Both`; qualified ones are refused.

use proc_macro2::TokenStream;

use crate::module::{self, Scope};

/// Expands `#[appschema::both(attr)] item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    module::expand(Scope::Both, attr, item)
}
