//! Compile-fail tests: each misuse of the marking attributes gives an error at
//! the offending token with a `help:` line. The `.stderr` files pin the
//! messages; regenerate with `TRYBUILD=overwrite cargo test --test ui` and
//! review the diff.

#[test]
fn misuses_of_the_marking_attributes_fail_with_teaching_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
