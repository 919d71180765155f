#[appschema::isolated(schema = "billing")]
pub mod tenant {
    diesel::table! { orders (id) { id -> Int8 } }
}

fn main() {}
