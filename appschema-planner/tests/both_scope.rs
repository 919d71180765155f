//! The planner and tables marked `#[appschema::both]`: a migration that
//! changes them runs in the shared schema and in every tenant; one that
//! also touches shared-only or isolated-only tables is refused.

use appschema_core::{MigrationSet, Scope, Step};
use appschema_planner::schema_source::TableScopes;

const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared {
    diesel::table! { public.plans (id) { id -> Int8, name -> Text } }
}
#[appschema::isolated]
pub mod tenant {
    diesel::table! { orders (id) { id -> Int8, setting -> Text } }
}
#[appschema::both]
pub mod both {
    diesel::table! { settings (key) { key -> Text, value -> Text, plan_id -> Nullable<Int8> } }
}
"#;

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(schema: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("migrations")).unwrap();
        std::fs::write(dir.path().join("src/schema.rs"), schema).unwrap();
        Project { dir }
    }

    fn migration(&self, name: &str, up: &str) -> &Project {
        let d = self.dir.path().join("migrations").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), "-- nothing").unwrap();
        self
    }

    fn load(&self) -> Result<MigrationSet, String> {
        appschema_planner::load_with_schema_files(
            &self.dir.path().join("migrations"),
            &[self.dir.path().join("src/schema.rs")],
            self.dir.path(),
        )
        .map_err(|e| e.to_string())
    }
}

fn scopes(set: &MigrationSet) -> Vec<(&str, Scope)> {
    set.migrations()
        .iter()
        .map(|m| (m.version(), m.scope()))
        .collect()
}

#[test]
fn a_migration_changing_only_both_scope_tables_runs_in_the_shared_schema_and_in_tenants() {
    let p = Project::new(SCHEMA);
    p.migration(
        "2024-01-01-000000_plans",
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY, name text NOT NULL);",
    )
    .migration(
        "2024-01-02-000000_settings",
        "CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
         CREATE INDEX settings_value ON settings (value);
         INSERT INTO settings VALUES ('currency', 'EUR');",
    )
    // A foreign key from a both-scope table to a shared one: both copies
    // reference the one shared table.
    .migration(
        "2024-01-03-000000_settings_plan",
        "ALTER TABLE settings ADD plan_id bigint REFERENCES public.plans (id);
         DROP INDEX settings_value;",
    )
    // An isolated table referencing a both-scope one: the key resolves to
    // the tenant's copy; the migration stays isolated.
    .migration(
        "2024-01-04-000000_orders",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, setting text REFERENCES settings (key));",
    );
    let set = p.load().unwrap();
    assert_eq!(
        scopes(&set),
        [
            ("20240101000000", Scope::Shared),
            ("20240102000000", Scope::Both),
            ("20240103000000", Scope::Both),
            ("20240104000000", Scope::Isolated),
        ]
    );
    let steps: Vec<&str> = set
        .steps()
        .iter()
        .map(|s| match s {
            Step::Shared(m) => m.version(),
            Step::Isolated(run) => run[0].version(),
        })
        .collect();
    assert_eq!(
        steps,
        [
            "20240101000000",
            "20240102000000",
            "20240102000000",
            "20240103000000",
            "20240103000000"
        ]
    );
    // The tenant copies of `settings` reference `plans`: a reference table on Citus.
    assert!(
        set.citus_reference_tables().any(|t| t == "plans"),
        "{:?}",
        set.citus_reference_tables().collect::<Vec<_>>()
    );
}

#[test]
fn a_table_created_with_a_both_scope_table_takes_its_scope() {
    let p = Project::new(SCHEMA);
    p.migration(
        "2024-01-01-000000_settings",
        "CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
         CREATE TABLE setting_history (key text, value text);",
    )
    .migration(
        "2024-01-02-000000_history_index",
        "CREATE INDEX setting_history_key ON setting_history (key);",
    );
    let set = p.load().unwrap();
    assert_eq!(
        scopes(&set),
        [
            ("20240101000000", Scope::Both),
            ("20240102000000", Scope::Both)
        ]
    );
}

#[test]
fn a_migration_changing_a_both_scope_table_and_an_isolated_one_is_refused_naming_them() {
    let p = Project::new(SCHEMA);
    p.migration(
        "2024-01-01-000000_settings",
        "CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);",
    )
    .migration(
        "2024-01-02-000000_mixed",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, setting text);
         ALTER TABLE settings ADD note text;",
    );
    let message = p.load().unwrap_err();
    assert!(
        message.contains("2024-01-02-000000_mixed")
            && message.contains("changes tables marked #[appschema::both] (`settings`)")
            && message.contains("(`orders`)")
            && message.contains("move the statements on `settings` into a migration of their own"),
        "{message}"
    );
}

#[test]
fn a_migration_changing_a_both_scope_table_and_a_shared_one_is_refused() {
    let p = Project::new(SCHEMA);
    p.migration(
        "2024-01-01-000000_mixed",
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY, name text NOT NULL);
         CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);",
    );
    let message = p.load().unwrap_err();
    assert!(
        message.contains("(`settings`)") && message.contains("(`public.plans`)"),
        "{message}"
    );
}

#[test]
fn a_foreign_key_from_a_both_scope_table_to_an_isolated_one_is_refused() {
    // In the shared schema there is no isolated table to reference.
    let p = Project::new(SCHEMA);
    p.migration(
        "2024-01-01-000000_orders",
        "CREATE TABLE orders (id bigserial PRIMARY KEY);",
    )
    .migration(
        "2024-01-02-000000_settings",
        "CREATE TABLE settings (key text PRIMARY KEY, order_id bigint REFERENCES orders (id));",
    );
    let message = p.load().unwrap_err();
    assert!(
        message.contains("2024-01-02-000000_settings")
            && message.contains(
                "adds a foreign key from table `settings`, marked #[appschema::both], to isolated table `orders`"
            ),
        "{message}"
    );
}

#[test]
fn a_table_marked_both_and_isolated_is_refused_naming_both_markings() {
    let mut scopes = TableScopes::new();
    let path = std::path::Path::new("src/schema.rs");
    scopes
        .add_source(
            "#[appschema::both] mod both { diesel::table! { settings (key) { key -> Text } } }",
            path,
            std::path::Path::new("."),
        )
        .unwrap();
    let error = scopes
        .add_source(
            "#[appschema::isolated] mod tenant { diesel::table! { settings (key) { key -> Text } } }",
            std::path::Path::new("src/tenant.rs"),
            std::path::Path::new("."),
        )
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "table `settings` is marked both (in `src/schema.rs`) and isolated (in `src/tenant.rs`)"
        ),
        "{error}"
    );
    assert_eq!(scopes.get("settings").unwrap().scope, Scope::Both);
}
