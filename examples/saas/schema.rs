//! The saas example's tables: what `appschema-cli prepare` reads to decide
//! each migration's scope (run in `examples/saas`:
//! `appschema-cli prepare --schema-file schema.rs`).

#[appschema::shared]
pub mod shared {
    diesel::table! { plans (id) { id -> Int8, name -> Text, max_projects -> Int4, price_cents -> Int4 } }
}

#[appschema::isolated]
pub mod tenant {
    use super::shared::plans;

    diesel::table! { account (id) { id -> Int4, display_name -> Text, plan_id -> Int8 } }
    diesel::table! { projects (id) { id -> Int8, name -> Text } }
    diesel::table! { tasks (id) { id -> Int8, project_id -> Int8, title -> Text, done -> Bool } }

    diesel::joinable!(account -> plans (plan_id));
    diesel::joinable!(tasks -> projects (project_id));
    diesel::allow_tables_to_appear_in_same_query!(account, plans, projects, tasks);
}
