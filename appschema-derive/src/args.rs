//! The attributes' arguments as the expansion uses them: parsed by
//! `appschema-marking` (the one reader of the marking syntax, shared with
//! the migration planner), the shared schema then checked and made the
//! identifier diesel's `table!` takes.

use appschema_marking::{MarkingArgs, Scope, DEFAULT_SHARED_SCHEMA};
use proc_macro2::{Span, TokenStream};
use syn::{Ident, LitStr};

/// Parsed attribute arguments.
pub(crate) struct Args {
    /// For shared modules, the schema the tables live in.
    pub(crate) schema: Option<Ident>,
    /// The generated schema file to read, as written.
    pub(crate) file: Option<LitStr>,
}

impl Args {
    pub(crate) fn parse(scope: Scope, attr: TokenStream) -> syn::Result<Args> {
        let MarkingArgs { schema, file } = MarkingArgs::parse(scope, attr)?;
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
