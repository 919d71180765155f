//! What the real-history tests share: loading a fixture history, a
//! normalized catalog dump of a schema, text rows of a query, and a diff
//! for failure messages.

use std::path::PathBuf;
use std::process::Command;

use appschema_core::provision::{find_pg_dump, NewTenant, Source};
use appschema_core::MigrationSet;
use appschema_planner::load_with_schema_files;
use diesel::prelude::*;

/// The migrations of `appschema-planner/tests/fixtures/<name>`, planned with
/// the markings of its `src/schema.rs`.
pub fn history(name: &str) -> MigrationSet {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../appschema-planner/tests/fixtures")
        .join(name);
    load_with_schema_files(&dir.join("migrations"), &[dir.join("src/schema.rs")], &dir)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A request for tenant `public_name` in schema `schema`, built from `source`.
pub fn request(public_name: &str, schema: &str, source: Source) -> NewTenant {
    NewTenant::new(public_name)
        .unwrap()
        .schema(schema)
        .unwrap()
        .source(source)
}

/// `pg_dump --schema-only` of `schema`, normalized: comments, blank lines
/// and session settings left out, the schema's name replaced by `TENANT`.
pub fn normalized_dump(url: &str, schema: &str) -> String {
    let out = Command::new(find_pg_dump().expect("pg_dump"))
        .args([
            "--schema-only",
            "--no-owner",
            "--schema",
            schema,
            "--dbname",
            url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config")
                || l.starts_with('\\'))
        })
        .map(|l| l.replace(schema, "TENANT"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    value: String,
}

/// The `value` column of every row `sql` returns.
pub fn strings(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Row>(conn)
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .into_iter()
        .map(|r| r.value)
        .collect()
}

/// The lines of `expected` missing from `got` (`- `) and those `got` adds
/// (`+ `).
pub fn diff<S: AsRef<str> + PartialEq>(expected: &[S], got: &[S]) -> String {
    let mut out = String::new();
    for line in expected.iter().filter(|l| !got.contains(l)) {
        out.push_str(&format!("- {}\n", line.as_ref()));
    }
    for line in got.iter().filter(|l| !expected.contains(l)) {
        out.push_str(&format!("+ {}\n", line.as_ref()));
    }
    if out.is_empty() {
        out.push_str("(same lines, other order)");
    }
    out
}

/// [`diff`] of two texts, line by line.
pub fn diff_lines(expected: &str, got: &str) -> String {
    diff(
        &expected.lines().collect::<Vec<_>>(),
        &got.lines().collect::<Vec<_>>(),
    )
}
