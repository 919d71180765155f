//! The attributes and their arguments: `schema = ".."` (shared only) and
//! `file = ".."`.
//!
//! The accepted syntax is deliberately small and fixed:
//! `#[appschema::shared]`, `#[appschema::shared(schema = "x")]`,
//! `#[appschema::isolated]`, `#[appschema::both]`, and `file = "path"` on
//! any of them.

use std::fmt;

use proc_macro2::TokenStream;
use syn::LitStr;

/// The shared schema when none is named.
pub const DEFAULT_SHARED_SCHEMA: &str = "public";

/// Which marking: the attribute's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `#[appschema::shared]`: one copy, in a shared schema.
    Shared,
    /// `#[appschema::isolated]`: a copy in every tenant's schema.
    Isolated,
    /// `#[appschema::both]`: a copy in the shared schema and in every tenant's.
    Both,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Shared => "shared",
            Scope::Isolated => "isolated",
            Scope::Both => "both",
        })
    }
}

impl Scope {
    /// The marking an attribute's path names: `appschema::shared` (or
    /// `shared`, imported), `appschema::isolated`, `appschema::both`;
    /// `None` for any other attribute.
    pub fn of_attribute(path: &syn::Path) -> Option<Scope> {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        match segments.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["appschema", "shared"] | ["shared"] => Some(Scope::Shared),
            ["appschema", "isolated"] | ["isolated"] => Some(Scope::Isolated),
            ["appschema", "both"] | ["both"] => Some(Scope::Both),
            _ => None,
        }
    }

    /// The accepted forms, for `help:` lines.
    pub fn argument_help(self) -> &'static str {
        match self {
            Scope::Shared => {
                "the arguments are `schema` and `file`: #[appschema::shared], \
                 #[appschema::shared(schema = \"billing\")], \
                 #[appschema::shared(file = \"src/schema/shared.rs\")]"
            }
            Scope::Isolated => {
                "the only argument is `file`: #[appschema::isolated] or \
                 #[appschema::isolated(file = \"src/schema/tenant.rs\")]"
            }
            Scope::Both => {
                "the only argument is `file`: #[appschema::both] or \
                 #[appschema::both(file = \"src/schema/both.rs\")]"
            }
        }
    }

    /// A marked module of this scope, for `help:` lines.
    pub fn module_help(self) -> &'static str {
        match self {
            Scope::Shared => "#[appschema::shared] pub mod shared { diesel::table! { ... } }",
            Scope::Isolated => "#[appschema::isolated] pub mod tenant { diesel::table! { ... } }",
            Scope::Both => "#[appschema::both] pub mod both { diesel::table! { ... } }",
        }
    }
}

/// A marking's arguments, as written.
#[derive(Debug, Clone, Default)]
pub struct MarkingArgs {
    /// `schema = ".."` (shared modules only): the shared schema the tables
    /// live in; [`DEFAULT_SHARED_SCHEMA`] when not given.
    pub schema: Option<LitStr>,
    /// `file = ".."`: the generated schema file to read, relative to the
    /// package root.
    pub file: Option<LitStr>,
}

impl MarkingArgs {
    /// Parses the arguments of `#[appschema::<scope>(…)]` (the tokens inside
    /// the parentheses; empty for the bare attribute). Refuses, with a
    /// message saying what is accepted: an unknown argument, one given
    /// twice, a value that is not a string literal, `schema` on an isolated
    /// or a both module.
    pub fn parse(scope: Scope, attr: TokenStream) -> syn::Result<MarkingArgs> {
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
        Ok(MarkingArgs { schema, file })
    }
}
