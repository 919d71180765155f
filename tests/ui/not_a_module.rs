#[appschema::isolated]
pub fn orders() {}

fn main() {
    orders();
}
