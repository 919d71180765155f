// Read by `appschema-cli prepare` (not compiled here: the marking macros are another crate's concern).
#[appschema::shared]
pub mod shared {
    diesel::table! { public.plans (id) { id -> Int8, name -> Text } }
}

#[appschema::isolated]
pub mod tenant {
    diesel::table! { orders (id) { id -> Int8, plan_id -> Int8, note -> Nullable<Text> } }
}
