//! Plans real diesel histories the way issue 24's tester did (one
//! application instance per tenant: every table of the application's
//! `diesel print-schema` file marked isolated, no declarations, no default
//! scope) and counts the migrations the planner leaves undecided.
//!
//! ```text
//! APPSCHEMA_HISTORIES=/tmp/histories cargo run -p appschema-planner --example count_undecided
//! ```
//!
//! Each subdirectory of `$APPSCHEMA_HISTORIES` holds a `migrations/`
//! directory and the application's `schema.rs`. Nothing here needs the
//! network: fetch the histories first (BENCHMARKS.md says how).

use std::path::Path;

use appschema_planner::schema_source::TableScopes;
use appschema_planner::PlanError;

fn main() {
    let root = std::env::var_os("APPSCHEMA_HISTORIES").expect(
        "set APPSCHEMA_HISTORIES to a directory of histories (<name>/migrations, <name>/schema.rs)",
    );
    let verbose = std::env::var_os("APPSCHEMA_VERBOSE").is_some();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("read APPSCHEMA_HISTORIES")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("migrations").is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        count(&dir, verbose);
    }
}

fn count(dir: &Path, verbose: bool) {
    let marks = r#"#[appschema::isolated(file = "schema.rs")] pub mod tenant {}"#;
    let mut tables = TableScopes::new();
    tables
        .add_source(marks, &dir.join("marks.rs"), dir)
        .unwrap_or_else(|e| panic!("{e}"));
    let migrations = std::fs::read_dir(dir.join("migrations"))
        .expect("read migrations")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("up.sql").is_file())
        .count();
    let errors = match appschema_planner::load(&dir.join("migrations"), &tables) {
        Ok(set) => {
            if verbose {
                for m in set.migrations() {
                    if m.scope() == appschema_planner::Scope::Shared {
                        println!("  shared: {}", m.name());
                    }
                }
            }
            Vec::new()
        }
        Err(e) => e.0,
    };
    let undecided = errors
        .iter()
        .filter(|e| matches!(e, PlanError::Undecidable { .. }))
        .count();
    let other = errors.len() - undecided;
    println!(
        "{}: {migrations} migrations, {} tables marked isolated: {undecided} undecided ({:.1} %), {other} other errors",
        dir.file_name().unwrap_or_default().to_string_lossy(),
        tables.iter().count(),
        100.0 * undecided as f64 / migrations.max(1) as f64,
    );
    if verbose {
        for e in &errors {
            println!("  - {e}");
        }
    }
}
