#[appschema::isolated(file = "src/schema/tenant.rs")]
pub mod tenant {}

fn main() {}
