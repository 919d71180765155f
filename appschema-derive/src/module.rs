//! What both attributes do to a module: read the tables (inline or from a
//! generated file), qualify or check them, and record their metadata in
//! `TABLES`.

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Ident, Item, ItemMacro, ItemMod, LitStr};

pub(crate) use appschema_marking::Scope;
use appschema_marking::TableDecl;

use crate::args::Args;

/// The metadata's `::appschema::Scope` for a marking.
fn meta_path(scope: Scope) -> TokenStream {
    match scope {
        Scope::Shared => quote!(::appschema::Scope::Shared),
        Scope::Isolated => quote!(::appschema::Scope::Isolated),
        Scope::Both => quote!(::appschema::Scope::Both),
    }
}

/// Expands `#[appschema::<scope>(attr)] <item>`.
pub(crate) fn expand(
    scope: Scope,
    attr: TokenStream,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    let args = Args::parse(scope, attr)?;
    let mut module = inline_module(scope, item)?;
    let (brace, inline_items) = module.content.take().expect("checked inline");

    let mut items = Vec::new();
    let mut extra = TokenStream::new();
    if let Some(file) = &args.file {
        let (path, file_items, printed_from) = read_schema_file(scope, file)?;
        let path = LitStr::new(path.to_str().expect("checked UTF-8"), file.span());
        // Makes cargo rebuild when the generated file changes.
        extra.extend(quote!(
            const _: &[u8] = ::core::include_bytes!(#path);
        ));
        let origin = Origin { file, printed_from };
        items.extend(
            file_items
                .into_iter()
                .map(|item| (item, Some(origin.clone()))),
        );
    }
    items.extend(inline_items.into_iter().map(|item| (item, None)));

    let mut out = Vec::with_capacity(items.len());
    let mut metas = Vec::new();
    let mut errors: Option<syn::Error> = None;
    for (item, from_file) in items {
        match mark_item(scope, args.schema.as_ref(), item, from_file.as_ref()) {
            Ok((item, meta)) => {
                out.push(item);
                metas.extend(meta);
            }
            Err(e) => match &mut errors {
                Some(all) => all.combine(e),
                None => errors = Some(e),
            },
        }
    }
    if let Some(errors) = errors {
        return Err(errors);
    }

    let tables_doc = format!(
        " The tables of this module as `#[appschema::{scope}]` marked them: SQL name, \
         scope, schema and columns."
    );
    extra.extend(quote! {
        #[doc = #tables_doc]
        pub const TABLES: &[::appschema::TableMeta] = &[#(#metas),*];
    });
    let mut body = quote!(#(#out)*);
    body.extend(extra);
    let ItemMod {
        attrs,
        vis,
        unsafety,
        mod_token,
        ident,
        ..
    } = module;
    let mut braced = TokenStream::new();
    brace.surround(&mut braced, |tokens| tokens.extend(body));
    Ok(quote! {
        #(#attrs)*
        #vis #unsafety #mod_token #ident #braced
    })
}

/// The item as an inline module, or an error saying how to make it one.
fn inline_module(scope: Scope, item: TokenStream) -> syn::Result<ItemMod> {
    let item: Item = syn::parse2(item)?;
    let (what, at): (&str, TokenStream) = match item {
        Item::Mod(m) if m.content.is_some() => return Ok(m),
        Item::Mod(m) => {
            return Err(syn::Error::new_spanned(
                quote!(#m),
                format!(
                    "#[appschema::{scope}] needs the module's tables inline, in braces\n\
                     help: write `pub mod {0} {{ diesel::table! {{ ... }} }}`, or point at a file \
                     written by `diesel print-schema`: \
                     #[appschema::{scope}(file = \"src/schema/{0}.rs\")] pub mod {0} {{}}",
                    m.ident
                ),
            ))
        }
        Item::Struct(i) => ("a struct", i.ident.to_token_stream()),
        Item::Enum(i) => ("an enum", i.ident.to_token_stream()),
        Item::Fn(i) => ("a function", i.sig.ident.to_token_stream()),
        Item::Const(i) => ("a const", i.ident.to_token_stream()),
        Item::Static(i) => ("a static", i.ident.to_token_stream()),
        Item::Trait(i) => ("a trait", i.ident.to_token_stream()),
        Item::Type(i) => ("a type alias", i.ident.to_token_stream()),
        Item::Union(i) => ("a union", i.ident.to_token_stream()),
        Item::Macro(i) => ("a macro invocation", i.mac.path.to_token_stream()),
        Item::Impl(i) => ("an impl block", i.self_ty.to_token_stream()),
        Item::Use(i) => ("a `use` item", i.to_token_stream()),
        other => ("this item", other.to_token_stream()),
    };
    Err(syn::Error::new_spanned(
        at,
        format!(
            "#[appschema::{scope}] marks a module of diesel tables, not {what}\n\
             help: put the `table!` invocations in an inline module: {}",
            scope.module_help()
        ),
    ))
}

/// Where a table read from a schema file came from.
#[derive(Clone)]
struct Origin<'a> {
    /// The `file = ".."` literal.
    file: &'a LitStr,
    /// The schema `diesel print-schema --schema <name>` printed the file
    /// from, when the file has that shape.
    printed_from: Option<Ident>,
}

/// Reads and parses the generated schema file named by `file = ".."`.
///
/// `diesel print-schema --schema <name>` wraps its output in
/// `pub mod <name> { .. }` and qualifies every table with `<name>.`; such a
/// file is unwrapped and its schema returned, so an isolated module can be
/// printed from any one tenant's schema.
fn read_schema_file(
    scope: Scope,
    file: &LitStr,
) -> syn::Result<(PathBuf, Vec<Item>, Option<Ident>)> {
    let written = file.value();
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").ok_or_else(|| {
        syn::Error::new_spanned(
            file,
            "CARGO_MANIFEST_DIR is not set, so `file` cannot be resolved\n\
             help: build with cargo, which sets it",
        )
    })?;
    let path = Path::new(&dir).join(&written);
    if path.to_str().is_none() {
        return Err(syn::Error::new_spanned(
            file,
            format!("the path of schema file `{written}` is not valid UTF-8\nhelp: rename it"),
        ));
    }
    let source = std::fs::read_to_string(&path).map_err(|e| {
        syn::Error::new_spanned(
            file,
            // Name the file as written, relative to the package, never by its
            // absolute path: that depends on where the package (or cargo's
            // target directory, for trybuild's copies) happens to live.
            format!(
                "cannot read schema file `{written}` of package `{package}`: {e}\n\
                 help: the path is relative to the package root (CARGO_MANIFEST_DIR, \
                 the directory of its Cargo.toml); write the file with \
                 `diesel print-schema > {written}`, then use \
                 #[appschema::{scope}(file = \"{written}\")]",
                package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "?".into()),
            ),
        )
    })?;
    let parsed = syn::parse_file(&source).map_err(|e| {
        syn::Error::new_spanned(
            file,
            format!(
                "schema file `{written}` is not valid Rust: {e} (in the item starting at line {})\n\
                 help: regenerate it with `diesel print-schema > {written}`",
                first_bad_line(&source)
            ),
        )
    })?;
    Ok(match <[Item; 1]>::try_from(parsed.items) {
        Ok(
            [Item::Mod(ItemMod {
                ident,
                content: Some((_, items)),
                ..
            })],
        ) => (path, items, Some(ident)),
        Ok([item]) => (path, vec![item], None),
        Err(items) => (path, items, None),
    })
}

/// The line (1-based) where the first item that does not parse starts.
///
/// Tokens parsed inside a proc macro carry no line numbers, so this finds the
/// longest run of whole lines that does parse; the bad item starts after it.
/// Only runs on the error path.
fn first_bad_line(source: &str) -> usize {
    let lines: Vec<&str> = source.lines().collect();
    let good = (0..=lines.len())
        .rev()
        .find(|&n| syn::parse_file(&lines[..n].join("\n")).is_ok())
        .unwrap_or(0);
    lines[good..]
        .iter()
        .position(|line| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with("//")
        })
        .map_or(good + 1, |offset| good + offset + 1)
}

/// Rewrites one item of the module; returns its metadata if it is a table.
fn mark_item(
    scope: Scope,
    schema: Option<&Ident>,
    item: Item,
    from_file: Option<&Origin>,
) -> syn::Result<(TokenStream, Option<TokenStream>)> {
    let Item::Macro(ItemMacro {
        attrs,
        ident: None,
        mac,
        semi_token,
    }) = item
    else {
        return Ok((item.into_token_stream(), None));
    };
    let is_table = mac.path.segments.last().is_some_and(|s| s.ident == "table");
    if !is_table {
        let item = ItemMacro {
            attrs,
            ident: None,
            mac,
            semi_token,
        };
        return Ok((item.into_token_stream(), None));
    }
    // Let diesel report malformed tables itself, with its own messages.
    let Ok(table) = syn::parse2::<TableDecl>(mac.tokens.clone()) else {
        let item = ItemMacro {
            attrs,
            ident: None,
            mac,
            semi_token,
        };
        return Ok((item.into_token_stream(), None));
    };
    let sql_name = table.sql_name();
    let printed_from = from_file.and_then(|origin| origin.printed_from.as_ref());
    if let Some((written, _)) = &table.schema {
        match (scope, schema) {
            // `diesel print-schema --schema <tenant>` output: the qualifier
            // names the tenant printed from, and is dropped.
            (Scope::Isolated, _) if Some(written) == printed_from => {}
            (Scope::Both, _) => {
                return Err(located(
                    from_file,
                    written,
                    format!(
                        "table `{sql_name}` is qualified with schema `{written}`, but tables in both \
                         scopes must stay unqualified so a tenant connection finds the tenant's copy \
                         and a shared connection the shared one\n\
                         help: write `{0} (...) {{ ... }}` without `{written}.`, or move the table to a \
                         module marked #[appschema::shared(schema = \"{written}\")]",
                        table.name
                    ),
                ))
            }
            (Scope::Isolated, _) => {
                return Err(located(
                    from_file,
                    written,
                    format!(
                        "table `{sql_name}` is qualified with schema `{written}`, but isolated \
                         tables must stay unqualified so each tenant's search_path finds its own copy\n\
                         help: write `{0} (...) {{ ... }}` without `{written}.`, or move the table to a \
                         module marked #[appschema::shared(schema = \"{written}\")]",
                        table.name
                    ),
                ))
            }
            (Scope::Shared, Some(shared)) if written != shared => {
                return Err(located(
                    from_file,
                    written,
                    format!(
                        "table `{sql_name}` is qualified with schema `{written}`, but this module's \
                         shared schema is `{shared}`\n\
                         help: mark the module #[appschema::shared(schema = \"{written}\")], \
                         or drop the `{written}.` qualifier"
                    ),
                ))
            }
            _ => {}
        }
    }
    let tokens = table.to_tokens_in(schema);
    let mac = syn::Macro { tokens, ..mac };
    let rewritten = ItemMacro {
        attrs,
        ident: None,
        mac,
        semi_token,
    };

    let columns = table.columns().iter().map(|c| {
        let (name, ty) = (&c.sql_name, &c.sql_type);
        quote!(::appschema::ColumnMeta { name: #name, sql_type: #ty })
    });
    let scope_path = meta_path(scope);
    let schema_meta = match schema {
        Some(s) => {
            let s = s.to_string();
            quote!(::core::option::Option::Some(#s))
        }
        None => quote!(::core::option::Option::None),
    };
    let meta = quote! {
        ::appschema::TableMeta {
            name: #sql_name,
            scope: #scope_path,
            schema: #schema_meta,
            columns: &[#(#columns),*],
        }
    };
    Ok((rewritten.into_token_stream(), Some(meta)))
}

/// An error at `at`, or — for tokens read from a schema file, which have no
/// place in the user's source — at the `file = ".."` literal, naming the file.
fn located(from_file: Option<&Origin>, at: &Ident, message: String) -> syn::Error {
    match from_file {
        Some(Origin { file, .. }) => syn::Error::new_spanned(
            file,
            format!("in schema file `{}`: {message}", file.value()),
        ),
        None => syn::Error::new_spanned(at, message),
    }
}
