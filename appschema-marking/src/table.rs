//! One `diesel::table!` invocation: just enough of diesel's grammar to find
//! the table's name and optional schema (to rewrite them) and its columns (to
//! record them). Everything else is kept token for token, so diesel still
//! parses — and reports errors in — the table itself.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Attribute, Ident, ItemUse, Token};

/// The body of a `table!` invocation (one table, as diesel takes it), parsed
/// with [`syn::parse2`] / [`syn::parse_quote!`]; anything that is not
/// `use …;* #[…]* [schema.]name [(keys)] { #[…]* column -> Type, … }` is
/// refused.
#[derive(Debug)]
pub struct TableDecl {
    uses: Vec<ItemUse>,
    attrs: Vec<Attribute>,
    /// `billing` and the `.` of `billing.plans`, when qualified.
    pub schema: Option<(Ident, Token![.])>,
    /// The Rust name (`plans`), which is also diesel's module name.
    pub name: Ident,
    /// The primary key and the braced columns, untouched.
    rest: TokenStream,
    columns: Vec<Column>,
}

/// A column as recorded in the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The SQL name (`#[sql_name = ".."]` or the Rust name).
    pub sql_name: String,
    /// The diesel SQL type as written, normalised (`Nullable<Text>`).
    pub sql_type: String,
}

impl Parse for TableDecl {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut uses = Vec::new();
        while input.fork().parse::<ItemUse>().is_ok() {
            uses.push(input.parse()?);
        }
        let attrs = Attribute::parse_outer(input)?;
        let first: Ident = input.call(Ident::parse_any)?;
        let (schema, name) = if input.peek(Token![.]) {
            let dot: Token![.] = input.parse()?;
            let name: Ident = input.call(Ident::parse_any)?;
            (Some((first, dot)), name)
        } else {
            (None, first)
        };
        let rest: TokenStream = input.parse()?;
        let columns = syn::parse::Parser::parse2(parse_columns, rest.clone())?;
        Ok(TableDecl {
            uses,
            attrs,
            schema,
            name,
            rest,
            columns,
        })
    }
}

/// `(id, ..)? { col -> Type, .. }`
fn parse_columns(input: ParseStream) -> syn::Result<Vec<Column>> {
    if input.peek(syn::token::Paren) {
        let _keys: proc_macro2::Group = input.parse()?;
    }
    let body;
    syn::braced!(body in input);
    let defs = Punctuated::<ColumnDef, Token![,]>::parse_terminated(&body)?;
    Ok(defs
        .into_iter()
        .map(|def| Column {
            sql_name: sql_name(&def.attrs).unwrap_or_else(|| def.name.unraw().to_string()),
            sql_type: type_as_written(&def.ty),
        })
        .collect())
}

struct ColumnDef {
    attrs: Vec<Attribute>,
    name: Ident,
    ty: syn::TypePath,
}

impl Parse for ColumnDef {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = Attribute::parse_outer(input)?;
        let name = input.call(Ident::parse_any)?;
        let _arrow: Token![->] = input.parse()?;
        let ty = input.parse()?;
        Ok(ColumnDef { attrs, name, ty })
    }
}

/// The value of a `#[sql_name = ".."]` attribute, if there is one.
fn sql_name(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| match &attr.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("sql_name") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value().trim_start_matches("r#").to_string()),
            _ => None,
        },
        _ => None,
    })
}

/// A type as a person writes it: `Nullable<Array<Int4>>`, `sql_types::Mood`.
fn type_as_written(ty: &syn::TypePath) -> String {
    let mut out = String::new();
    if ty.path.leading_colon.is_some() {
        out.push_str("::");
    }
    for (i, segment) in ty.path.segments.iter().enumerate() {
        if i > 0 {
            out.push_str("::");
        }
        out.push_str(&segment.ident.to_string());
        if let syn::PathArguments::AngleBracketed(args) = &segment.arguments {
            let args: Vec<String> = args
                .args
                .iter()
                .map(|arg| match arg {
                    syn::GenericArgument::Type(syn::Type::Path(p)) if p.qself.is_none() => {
                        type_as_written(p)
                    }
                    other => other.to_token_stream().to_string().replace(' ', ""),
                })
                .collect();
            out.push('<');
            out.push_str(&args.join(", "));
            out.push('>');
        }
    }
    out
}

impl TableDecl {
    /// The table's SQL name (`#[sql_name = ".."]` or the Rust name).
    pub fn sql_name(&self) -> String {
        sql_name(&self.attrs).unwrap_or_else(|| self.name.unraw().to_string())
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The invocation's body again, qualified with `schema` when given.
    pub fn to_tokens_in(&self, schema: Option<&Ident>) -> TokenStream {
        let TableDecl {
            uses,
            attrs,
            name,
            rest,
            ..
        } = self;
        let qualifier = match (schema, &self.schema) {
            (Some(schema), Some((_, dot))) => quote!(#schema #dot),
            (Some(schema), None) => quote!(#schema .),
            (None, _) => quote!(),
        };
        quote! {
            #(#uses)*
            #(#attrs)*
            #qualifier #name #rest
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_recorded_as_written_without_token_spacing() {
        let table: TableDecl = syn::parse_quote! {
            use diesel::sql_types::*;
            /// Docs stay.
            #[sql_name = "Plans"]
            billing.plans (id) {
                id -> Int8,
                #[sql_name = "type"]
                kind -> Nullable<Array<sql_types::Int4>>,
                #[max_length = 40]
                r#ref -> Varchar,
            }
        };
        assert_eq!(table.sql_name(), "Plans");
        assert_eq!(table.schema.as_ref().unwrap().0, "billing");
        let cols: Vec<(&str, &str)> = table
            .columns()
            .iter()
            .map(|c| (c.sql_name.as_str(), c.sql_type.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("id", "Int8"),
                ("type", "Nullable<Array<sql_types::Int4>>"),
                ("ref", "Varchar"),
            ]
        );
    }
}
