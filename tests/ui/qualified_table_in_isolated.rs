use diesel::prelude::*;

#[appschema::isolated]
pub mod tenant {
    diesel::table! { billing.orders (id) { id -> Int8 } }
}

fn main() {
    // The module is still emitted beside the error: no cascade of errors here.
    let _ = tenant::orders::table.select(tenant::orders::id);
}
