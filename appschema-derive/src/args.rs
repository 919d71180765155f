//! The attributes' arguments: `schema = ".."` (shared only) and `file = ".."`.
//!
//! The migrations build step reads these same attributes from source with its
//! own reader, so the accepted syntax is deliberately small and fixed:
//! `#[appschema::shared]`, `#[appschema::shared(schema = "x")]`,
//! `#[appschema::isolated]`, `#[appschema::both]`, and `file = "path"` on
//! any of them.

use proc_macro2::{Span, TokenStream};
use syn::{Ident, LitStr};

use crate::module::Scope;

/// The shared schema when none is named.
pub(crate) const DEFAULT_SHARED_SCHEMA: &str = "public";

/// Parsed attribute arguments.
pub(crate) struct Args {
    /// For shared modules, the schema the tables live in.
    pub(crate) schema: Option<Ident>,
    /// The generated schema file to read, as written.
    pub(crate) file: Option<LitStr>,
}

impl Args {
    pub(crate) fn parse(scope: Scope, attr: TokenStream) -> syn::Result<Args> {
        let mut schema: Option<LitStr> = None;
        let mut file: Option<LitStr> = None;
        let parser = syn::meta::parser(|meta| {
            let slot = if meta.path.is_ident("schema") && scope == Scope::Shared {
                &mut schema
            } else if meta.path.is_ident("file") {
                &mut file
            } else if meta.path.is_ident("schema") && scope == Scope::Both {
                return Err(syn::Error::new_spanned(
                    &meta.path,
                    "`schema` is not an argument of #[appschema::both]: tables in both scopes \
                     stay unqualified, and the connection's search_path picks the tenant's copy \
                     or the shared schema's\n\
                     help: remove it, or mark the module #[appschema::shared(schema = \"...\")] \
                     if its tables live only in one shared schema",
                ));
            } else if meta.path.is_ident("schema") {
                return Err(syn::Error::new_spanned(
                    &meta.path,
                    "`schema` is not an argument of #[appschema::isolated]: isolated tables \
                     live in each tenant's schema, chosen by the connection's search_path\n\
                     help: remove it, or mark the module #[appschema::shared(schema = \"...\")] \
                     if its tables live in one shared schema",
                ));
            } else {
                let name = meta
                    .path
                    .get_ident()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| quote::ToTokens::to_token_stream(&meta.path).to_string());
                return Err(syn::Error::new_spanned(
                    &meta.path,
                    format!(
                        "unknown argument `{name}` of #[appschema::{scope}]\n\
                         help: {}",
                        scope.argument_help()
                    ),
                ));
            };
            if slot.is_some() {
                return Err(syn::Error::new_spanned(
                    &meta.path,
                    format!(
                        "`{}` is given twice\nhelp: keep one",
                        meta.path.get_ident().expect("checked above")
                    ),
                ));
            }
            let value = meta.value().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!(
                        "expected `= \"...\"` after the argument\nhelp: {}",
                        scope.argument_help()
                    ),
                )
            })?;
            *slot = Some(value.parse::<LitStr>().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!("expected a string literal\nhelp: {}", scope.argument_help()),
                )
            })?);
            Ok(())
        });
        syn::parse::Parser::parse2(parser, attr)?;
        let schema = match (scope, schema) {
            (Scope::Shared, Some(lit)) => Some(schema_ident(&lit)?),
            (Scope::Shared, None) => Some(Ident::new(DEFAULT_SHARED_SCHEMA, Span::call_site())),
            (Scope::Isolated | Scope::Both, _) => None,
        };
        Ok(Args { schema, file })
    }
}

/// The shared schema's name as the identifier diesel's `table!` wants, checked
/// against the rules appschema applies to every schema name.
fn schema_ident(lit: &LitStr) -> syn::Result<Ident> {
    let name = lit.value();
    let refuse = |why: &str| {
        Err(syn::Error::new_spanned(
            lit,
            format!(
                "shared schema name `{name}` {why}\n\
                 help: use lower-case ASCII letters, digits and `_`, starting with a letter, \
                 e.g. #[appschema::shared(schema = \"billing\")]"
            ),
        ))
    };
    if name.is_empty() {
        return refuse("is empty");
    }
    if name.len() > 63 {
        return refuse("is longer than PostgreSQL's 63-byte limit");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        return refuse("must start with a lower-case letter or `_`");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return refuse(&format!("contains {c:?}"));
    }
    if name.starts_with("pg_") || name == "information_schema" {
        return refuse("is reserved by PostgreSQL");
    }
    syn::parse_str::<Ident>(&name)
        .map(|ident| Ident::new(&ident.to_string(), lit.span()))
        .or_else(|_| refuse("is a Rust keyword, which diesel's `table!` cannot take as a schema"))
}
