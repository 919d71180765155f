#[appschema::both]
pub mod both {
    diesel::table! { public.settings (key) { key -> Text, value -> Text } }
}

fn main() {}
