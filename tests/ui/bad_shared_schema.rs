#[appschema::shared(schema = "Billing")]
pub mod billing {
    diesel::table! { invoices (id) { id -> Int8 } }
}

fn main() {}
