#[appschema::shared(scheme = "billing")]
pub mod shared {
    diesel::table! { plans (id) { id -> Int8 } }
}

fn main() {
    let _ = shared::plans::table;
}
