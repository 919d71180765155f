// @generated automatically by Diesel CLI.
// (What `diesel print-schema > tests/schema/tenant.rs` writes; read by
// `#[appschema::isolated(file = "tests/schema/tenant.rs")]` in tests/marking.rs.)

diesel::table! {
    invoices (id) {
        id -> Int8,
        #[max_length = 40]
        number -> Varchar,
        note -> Nullable<Text>,
    }
}
