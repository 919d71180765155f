#[appschema::both(schema = "public")]
pub mod both {
    diesel::table! { settings (key) { key -> Text, value -> Text } }
}

fn main() {}
