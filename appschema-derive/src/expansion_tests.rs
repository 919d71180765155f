//! Expansion snapshots: each test calls an expansion function directly and
//! pins its pretty-printed output (`cargo insta review` after a deliberate
//! change; CI refuses missing or differing snapshots).

use proc_macro2::TokenStream;
use quote::quote;

use crate::{both, isolated, shared};

fn pretty(tokens: TokenStream) -> String {
    let file: syn::File = syn::parse2(tokens).expect("expansion is a valid file");
    prettyplease::unparse(&file)
        // The include_bytes! path is absolute; keep snapshots machine-independent.
        .replace(env!("CARGO_MANIFEST_DIR"), "$CARGO_MANIFEST_DIR")
}

fn error(result: syn::Result<TokenStream>) -> String {
    match result {
        Ok(tokens) => panic!("expected an error, got:\n{}", pretty(tokens)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shared_qualifies_every_table_with_public_and_records_them() {
    let out = shared::expand(
        quote!(),
        quote! {
            pub mod shared {
                use diesel::sql_types::*;
                diesel::table! { plans (id) { id -> Int8, name -> Text } }
                /// Features of each plan.
                table! {
                    #[sql_name = "plan_features"]
                    features (plan_id, feature) {
                        plan_id -> Int8,
                        feature -> Text,
                        #[sql_name = "limit"]
                        max -> Nullable<Int4>,
                    }
                }
                diesel::joinable!(features -> plans (plan_id));
                diesel::allow_tables_to_appear_in_same_query!(features, plans);
            }
        },
    )
    .unwrap();
    insta::assert_snapshot!("shared_default_schema", pretty(out));
}

#[test]
fn shared_with_a_named_schema_keeps_tables_already_qualified_with_it() {
    let out = shared::expand(
        quote!(schema = "billing"),
        quote! {
            pub(crate) mod billing {
                diesel::table! { invoices (id) { id -> Int8 } }
                diesel::table! { billing.credits (id) { id -> Int8 } }
            }
        },
    )
    .unwrap();
    insta::assert_snapshot!("shared_named_schema", pretty(out));
}

#[test]
fn isolated_leaves_tables_unqualified_and_records_them() {
    let out = isolated::expand(
        quote!(),
        quote! {
            #[allow(missing_docs)]
            pub mod tenant {
                diesel::table! { orders (id) { id -> Int8, plan_id -> Int8, total -> Int8 } }
                diesel::joinable!(orders -> super::shared::plans (plan_id));
            }
        },
    )
    .unwrap();
    insta::assert_snapshot!("isolated_inline", pretty(out));
}

#[test]
fn isolated_with_a_file_reads_print_schema_output_and_tracks_the_file() {
    let out = isolated::expand(
        quote!(file = "fixtures/print_schema_tenant.rs"),
        quote! {
            pub mod tenant {
                diesel::joinable!(orders -> super::shared::plans (plan_id));
            }
        },
    )
    .unwrap();
    insta::assert_snapshot!("isolated_file", pretty(out));
}

#[test]
fn isolated_refuses_a_schema_qualified_table() {
    let message = error(isolated::expand(
        quote!(),
        quote!(
            mod tenant {
                diesel::table! { billing.orders (id) { id -> Int8 } }
            }
        ),
    ));
    assert!(
        message.starts_with(
            "table `orders` is qualified with schema `billing`, but isolated tables must stay unqualified"
        ),
        "{message}"
    );
    assert!(
        message.contains("\nhelp: write `orders (...) { ... }` without `billing.`"),
        "{message}"
    );
}

#[test]
fn a_qualified_table_in_a_schema_file_is_reported_at_the_file_argument() {
    let message = error(isolated::expand(
        quote!(file = "fixtures/print_schema_billing.rs"),
        quote!(
            mod tenant {}
        ),
    ));
    assert!(
        message.starts_with(
            "in schema file `fixtures/print_schema_billing.rs`: table `invoices` is qualified with schema `billing`"
        ),
        "{message}"
    );
    // The same file is fine for a module shared in that schema.
    let out = shared::expand(
        quote!(
            schema = "billing",
            file = "fixtures/print_schema_billing.rs"
        ),
        quote!(
            mod billing {}
        ),
    )
    .unwrap();
    assert!(pretty(out).contains("billing.invoices(id)"));
}

#[test]
fn shared_refuses_a_table_qualified_with_another_schema() {
    let message = error(shared::expand(
        quote!(),
        quote!(
            mod shared {
                diesel::table! { billing.plans (id) { id -> Int8 } }
            }
        ),
    ));
    assert!(
        message.starts_with(
            "table `plans` is qualified with schema `billing`, but this module's shared schema is `public`"
        ),
        "{message}"
    );
    assert!(message.contains("help: mark the module #[appschema::shared(schema = \"billing\")]"));
}

#[test]
fn errors_in_several_tables_are_all_reported() {
    let result = isolated::expand(
        quote!(),
        quote!(
            mod tenant {
                diesel::table! { a.orders (id) { id -> Int8 } }
                diesel::table! { b.items (id) { id -> Int8 } }
            }
        ),
    );
    assert_eq!(result.err().map(|e| e.into_iter().count()), Some(2));
}

#[test]
fn schema_is_not_an_argument_of_isolated() {
    let message = error(isolated::expand(
        quote!(schema = "x"),
        quote!(
            mod tenant {}
        ),
    ));
    assert!(
        message.starts_with("`schema` is not an argument of #[appschema::isolated]"),
        "{message}"
    );
}

#[test]
fn arguments_must_be_string_literals_given_once() {
    let message = error(shared::expand(
        quote!(schema = billing),
        quote!(
            mod shared {}
        ),
    ));
    assert!(
        message.starts_with("expected a string literal\nhelp:"),
        "{message}"
    );
    let message = error(shared::expand(
        quote!(schema = "a", schema = "b"),
        quote!(
            mod shared {}
        ),
    ));
    assert_eq!(message, "`schema` is given twice\nhelp: keep one");
}

#[test]
fn the_shared_schema_name_follows_postgres_and_diesel_rules() {
    for (name, why) in [
        ("Billing", "must start with a lower-case letter"),
        ("bill-ing", "contains '-'"),
        ("pg_billing", "is reserved by PostgreSQL"),
        ("type", "is a Rust keyword"),
        ("", "is empty"),
    ] {
        let message = error(shared::expand(
            quote!(schema = #name),
            quote!(
                mod shared {}
            ),
        ));
        assert!(message.contains(why), "{name}: {message}");
        assert!(
            message.contains("\nhelp: use lower-case ASCII letters"),
            "{name}: {message}"
        );
    }
}

#[test]
fn an_unparsable_schema_file_is_named_in_the_error() {
    let message = error(isolated::expand(
        quote!(file = "fixtures/not_rust.rs"),
        quote!(
            mod tenant {}
        ),
    ));
    assert!(
        message.starts_with("schema file `fixtures/not_rust.rs` is not valid Rust:"),
        "{message}"
    );
    assert!(
        message.contains("(in the item starting at line 6)"),
        "{message}"
    );
}

#[test]
fn a_module_without_braces_is_refused_with_the_file_form_as_help() {
    let message = error(isolated::expand(
        quote!(),
        quote!(
            pub mod tenant;
        ),
    ));
    assert!(
        message
            .contains("#[appschema::isolated(file = \"src/schema/tenant.rs\")] pub mod tenant {}"),
        "{message}"
    );
}

#[test]
fn a_file_printed_from_one_tenants_schema_is_unwrapped_and_unqualified() {
    let out = isolated::expand(
        quote!(file = "fixtures/print_schema_with_schema.rs"),
        quote!(
            pub mod tenant {}
        ),
    )
    .unwrap();
    insta::assert_snapshot!("isolated_file_printed_with_schema", pretty(out));
}

#[test]
fn a_file_printed_from_a_shared_schema_needs_that_schema_named() {
    let message = error(shared::expand(
        quote!(file = "fixtures/print_schema_with_schema.rs"),
        quote!(
            pub mod shared {}
        ),
    ));
    assert!(
        message.starts_with("in schema file `fixtures/print_schema_with_schema.rs`: table `orders` is qualified with schema `acme`, but this module's shared schema is `public`"),
        "{message}"
    );
    let out = shared::expand(
        quote!(
            schema = "acme",
            file = "fixtures/print_schema_with_schema.rs"
        ),
        quote!(
            pub mod shared {}
        ),
    )
    .unwrap();
    assert!(pretty(out).contains("acme.orders(id)"));
}

#[test]
fn both_leaves_tables_unqualified_and_records_them_as_both() {
    let out = both::expand(
        quote!(),
        quote! {
            pub mod both {
                diesel::table! { settings (key) { key -> Text, value -> Text } }
            }
        },
    )
    .unwrap();
    insta::assert_snapshot!("both_inline", pretty(out));
}

#[test]
fn both_refuses_a_schema_qualified_table() {
    let message = error(both::expand(
        quote!(),
        quote!(
            mod both {
                diesel::table! { public.settings (key) { key -> Text } }
            }
        ),
    ));
    assert!(
        message.starts_with(
            "table `settings` is qualified with schema `public`, but tables in both scopes must stay unqualified"
        ),
        "{message}"
    );
    assert!(
        message.contains("\nhelp: write `settings (...) { ... }` without `public.`"),
        "{message}"
    );
}

#[test]
fn schema_is_not_an_argument_of_both() {
    let message = error(both::expand(
        quote!(schema = "public"),
        quote!(
            mod both {}
        ),
    ));
    assert!(
        message.starts_with("`schema` is not an argument of #[appschema::both]"),
        "{message}"
    );
}
