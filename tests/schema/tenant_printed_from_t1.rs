// @generated automatically by Diesel CLI.
// (What `diesel print-schema --schema t1` writes: a module named after the
// schema, every table qualified with it.)

pub mod t1 {
    diesel::table! {
        t1.orders (id) {
            id -> Int8,
            plan_id -> Int8,
            total -> Int8,
        }
    }
}
