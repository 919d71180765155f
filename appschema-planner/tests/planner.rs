//! The planner's decisions and refusals, from migration directories on disk.

use std::path::{Path, PathBuf};

use appschema_core::Scope;
use appschema_core::{MigrationSet, Step};
use appschema_planner::schema_source::TableScopes;

const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared {
    diesel::table! { public.plans (id) { id -> Int8, name -> Text } }
}
#[appschema::isolated]
pub mod tenant {
    diesel::table! { orders (id) { id -> Int8, plan_id -> Int8 } }
    diesel::table! { items (id) { id -> Int8 } }
}
"#;

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new() -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::create_dir_all(dir.path().join("migrations")).unwrap();
        std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
        Project { dir }
    }

    fn migration(&self, name: &str, up: &str, metadata: Option<&str>) -> &Project {
        let d = self.dir.path().join("migrations").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), "-- nothing").unwrap();
        if let Some(m) = metadata {
            std::fs::write(d.join("metadata.toml"), m).unwrap();
        }
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("migrations").join(name)
    }
}

fn scopes(set: &MigrationSet) -> Vec<(String, Scope)> {
    set.migrations()
        .iter()
        .map(|m| (m.version().to_string(), m.scope()))
        .collect()
}

#[test]
fn each_migration_takes_the_scope_of_the_tables_it_touches_in_version_order() {
    let p = Project::new();
    p.migration(
        "2024-01-02-000000_orders",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES public.plans (id));
         CREATE INDEX orders_plan ON orders (plan_id);
         COMMENT ON TABLE orders IS 'per tenant';",
        None,
    )
    .migration(
        "2024-01-01-000000_plans",
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY, name text NOT NULL);",
        None,
    )
    .migration(
        "2024-01-03-000000_pgcrypto",
        "CREATE EXTENSION IF NOT EXISTS pgcrypto;",
        Some("appschema_scope = \"shared\"\n"),
    )
    .migration(
        "2024-01-04-000000_items",
        "DO $$ BEGIN CREATE TABLE items (id bigint); END $$;
         CREATE FUNCTION touch() RETURNS trigger AS $$ BEGIN RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();",
        None,
    )
    .migration(
        "2024-01-05-000000_items_idx",
        "CREATE INDEX CONCURRENTLY items_id ON items (id);",
        Some("run_in_transaction = false\n"),
    );
    let set = p.load().unwrap();
    assert_eq!(
        scopes(&set),
        [
            ("20240101000000".into(), Scope::Shared),
            ("20240102000000".into(), Scope::Isolated),
            ("20240103000000".into(), Scope::Shared),
            ("20240104000000".into(), Scope::Isolated),
            ("20240105000000".into(), Scope::Isolated),
        ]
    );
    assert!(!set.migrations()[4].run_in_transaction());
    assert_eq!(set.isolated_head(), Some("20240105000000"));
    let steps = set.steps();
    assert_eq!(steps.len(), 4);
    assert!(matches!(steps[3], Step::Isolated(run) if run.len() == 2));
}

#[test]
fn a_declared_scope_decides_only_what_the_tables_cannot() {
    let p = Project::new();
    p.migration(
        "1_extension",
        "CREATE EXTENSION IF NOT EXISTS citext;",
        Some("appschema_scope = \"isolated\""),
    )
    .migration(
        "2_seed",
        "INSERT INTO orders (id) VALUES (1);",
        Some("appschema_scope = \"isolated\""),
    );
    assert_eq!(
        scopes(&p.load().unwrap()),
        [("1".into(), Scope::Isolated), ("2".into(), Scope::Isolated)]
    );
}

#[test]
fn a_declared_scope_that_contradicts_the_tables_is_refused_naming_both() {
    let p = Project::new();
    p.migration(
        "1_seed",
        "INSERT INTO orders (id) VALUES (1);",
        Some("appschema_scope = \"shared\""),
    );
    let err = p.load().unwrap_err();
    assert_eq!(
        err,
        format!(
            "`{}` declares `appschema_scope = \"shared\"` but touches isolated tables (`orders`): \
             a declaration only decides what the tables cannot; remove it, or move the shared \
             statements into a migration of their own",
            p.path("1_seed").display()
        )
    );
}

/// The isolation bug of issue 15: `migration generate --scope isolated`
/// declared the scope, and the migration also altered a shared table; it
/// passed the planner and `migrate` altered `public.plans` through the first
/// tenant.
#[test]
fn a_declared_scope_never_lets_a_mixed_migration_through() {
    let p = Project::new();
    p.migration(
        "1_both",
        "ALTER TABLE orders ADD COLUMN note text; ALTER TABLE public.plans ADD COLUMN tier int;",
        Some("appschema_scope = \"isolated\""),
    );
    let err = p.load().unwrap_err();
    assert_eq!(
        err,
        format!(
            "`{}` touches shared tables (`public.plans`) and isolated tables (`orders`): \
             split it into one shared and one isolated migration",
            p.path("1_both").display()
        )
    );
    let p = Project::new();
    p.migration(
        "1_shared_only",
        "ALTER TABLE public.plans ADD COLUMN tier int;",
        Some("appschema_scope = \"isolated\""),
    );
    let err = p.load().unwrap_err();
    assert!(
        err.contains(
            "declares `appschema_scope = \"isolated\"` but touches shared tables (`public.plans`)"
        ),
        "{err}"
    );
}

#[test]
fn a_migration_touching_both_scopes_must_be_split() {
    let p = Project::new();
    p.migration(
        "1_both",
        "ALTER TABLE public.plans ADD COLUMN x int; ALTER TABLE orders ADD COLUMN y int;",
        None,
    );
    let err = p.load().unwrap_err();
    assert_eq!(
        err,
        format!(
            "`{}` touches shared tables (`public.plans`) and isolated tables (`orders`): \
             split it into one shared and one isolated migration",
            p.path("1_both").display()
        )
    );
}

#[test]
fn a_migration_touching_no_marked_table_must_declare_its_scope() {
    let p = Project::new();
    p.migration("1_noop", "SELECT 1;", None).migration(
        "2_mystery",
        "CREATE TABLE mystery (id int);",
        None,
    );
    let err = p.load().unwrap_err();
    assert!(err.starts_with("2 problems in the migrations:"), "{err}");
    assert!(
        err.contains(&format!(
            "cannot decide the scope of `{}`: it touches no table (set a default for such \
             migrations with `appschema_default_scope = \"shared\"` or `\"isolated\"` in `{}`); \
             declare it with `appschema_scope = \"shared\"` or `appschema_scope = \"isolated\"` \
             in its metadata.toml",
            p.path("1_noop").display(),
            p.dir.path().join("migrations/metadata.toml").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(
            "it touches only objects no schema file marks and no other migration decides (`mystery`)"
        ),
        "{err}"
    );
}

#[test]
fn a_table_marked_both_shared_and_isolated_is_refused() {
    let p = Project::new();
    std::fs::write(
        p.dir.path().join("src/more.rs"),
        "#[appschema::shared] mod s { diesel::table! { orders (id) { id -> Int8 } } }",
    )
    .unwrap();
    let err = appschema_planner::load_with_schema_files(
        &p.dir.path().join("migrations"),
        &[
            p.dir.path().join("src/schema.rs"),
            p.dir.path().join("src/more.rs"),
        ],
        p.dir.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("table `orders` is marked both shared (in `"),
        "{err}"
    );
    assert!(
        err.contains("more.rs") && err.contains("schema.rs"),
        "{err}"
    );
}

#[test]
fn a_foreign_key_from_a_shared_table_to_an_isolated_one_is_refused() {
    let p = Project::new();
    p.migration(
        "1_bad_fk",
        "ALTER TABLE public.plans ADD CONSTRAINT plans_order FOREIGN KEY (id) REFERENCES orders (id);",
        None,
    )
    .migration(
        "2_good_fk",
        "ALTER TABLE orders ADD CONSTRAINT orders_plan FOREIGN KEY (plan_id) REFERENCES public.plans (id);",
        None,
    );
    let err = p.load().unwrap_err();
    assert_eq!(
        err,
        format!(
            "`{}` adds a foreign key from shared table `public.plans` to isolated table `orders`: \
             a shared row cannot point into one tenant's schema; reference shared tables only \
             (isolated -> shared is fine)",
            p.path("1_bad_fk").display()
        )
    );
}

#[test]
fn sql_that_does_not_parse_is_refused_with_postgresql_s_message() {
    let p = Project::new();
    p.migration("1_typo", "CREAT TABLE orders (id int);", None);
    let err = p.load().unwrap_err();
    assert_eq!(
        err,
        format!(
            "`{}` does not parse: syntax error at or near \"CREAT\"",
            p.path("1_typo").join("up.sql").display()
        )
    );
}

#[test]
fn malformed_migration_directories_are_named() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("noversion")).unwrap();
    std::fs::create_dir_all(p.path("3_no_up")).unwrap();
    let err = p.load().unwrap_err();
    assert!(err.contains("its name must be `<version>_<name>`"), "{err}");
    assert!(err.contains("it has no `up.sql`"), "{err}");
    let missing =
        appschema_planner::load(Path::new("/nonexistent/migrations"), &TableScopes::new())
            .unwrap_err()
            .to_string();
    assert!(
        missing.starts_with("cannot read `/nonexistent/migrations`"),
        "{missing}"
    );
}

#[test]
fn tables_dropped_from_the_schema_keep_the_scope_of_the_migration_that_created_them() {
    let p = Project::new();
    p.migration(
        "1_create",
        "CREATE TABLE orders (id int); CREATE TABLE legacy (id int);",
        None,
    )
    .migration("2_drop", "DROP TABLE legacy;", None);
    assert_eq!(
        scopes(&p.load().unwrap()),
        [("1".into(), Scope::Isolated), ("2".into(), Scope::Isolated)]
    );
}

#[test]
fn the_build_step_embeds_the_planned_set_and_fails_on_planner_errors() {
    let p = Project::new();
    p.migration("1_orders", "CREATE TABLE orders (id int);", None);
    let out = p.dir.path().join("generated.rs");
    let files = [p.dir.path().join("src/schema.rs")];
    appschema_planner::build::generate(
        &p.dir.path().join("migrations"),
        &files,
        p.dir.path(),
        &out,
    )
    .unwrap();
    let code = std::fs::read_to_string(&out).unwrap();
    assert!(
        code.contains(r#"EmbeddedMigration { version: "1", name: "1_orders", scope: "isolated", up_sql: "CREATE TABLE orders (id int);", down_sql: Some("-- nothing"), statements: None, new_schema_sql: None },"#),
        "{code}"
    );
    p.migration(
        "2_both",
        "ALTER TABLE orders ADD x int; ALTER TABLE public.plans ADD y int;",
        None,
    );
    let err = appschema_planner::build::generate(
        &p.dir.path().join("migrations"),
        &files,
        p.dir.path(),
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("split it into one shared and one isolated migration"),
        "{err}"
    );
    // A build.rs returning `Result<(), Box<dyn Error>>` prints the error
    // with `Debug`: it must read as the message, not a struct dump.
    let err = appschema_planner::build::generate(
        &p.dir.path().join("migrations"),
        &files,
        p.dir.path(),
        &out,
    )
    .unwrap_err();
    assert_eq!(format!("{err:?}"), err.to_string());
}

#[test]
fn migrations_are_planned_in_diesel_s_version_order_whatever_the_name_format() {
    // By directory name `2017-05-01-…` sorts before `20170102…` ('-' < '0');
    // diesel applies by version, dashes removed: 20170102… first. The table
    // is created by the first and renamed by the second, so planning in
    // directory-name order would see the rename before the creation.
    let p = Project::new();
    p.migration(
        "20170102000000_create",
        "CREATE TABLE purchases (id int);",
        None,
    )
    .migration(
        "2017-05-01-000000_rename",
        "ALTER TABLE purchases RENAME TO orders;",
        None,
    )
    .migration(
        "2017-01-01-000000_first",
        "CREATE TABLE items (id int);",
        None,
    );
    let set = p.load().unwrap();
    let names: Vec<&str> = set.migrations().iter().map(|m| m.name()).collect();
    assert_eq!(
        names,
        [
            "2017-01-01-000000_first",
            "20170102000000_create",
            "2017-05-01-000000_rename"
        ]
    );
    assert!(set
        .migrations()
        .iter()
        .all(|m| m.scope() == Scope::Isolated));
}

#[test]
fn the_history_decides_renamed_dropped_indexed_and_viewed_tables() {
    let p = Project::new();
    p.migration("1_create", "CREATE TABLE purchases (id int);", None)
        .migration(
            "2_index",
            "CREATE INDEX purchases_by_id ON purchases (id);",
            None,
        )
        .migration("3_rename", "ALTER TABLE purchases RENAME TO orders;", None)
        .migration(
            "4_drop_index",
            "DROP INDEX CONCURRENTLY purchases_by_id;",
            Some("run_in_transaction = false"),
        )
        .migration(
            "5_audit",
            "CREATE TABLE audit (id int, order_id int REFERENCES orders (id));",
            None,
        )
        .migration("6_drop_audit", "DROP TABLE audit;", None)
        .migration(
            "7_view",
            "CREATE MATERIALIZED VIEW order_ids AS SELECT id FROM orders;",
            None,
        )
        .migration("8_refresh", "REFRESH MATERIALIZED VIEW order_ids;", None)
        .migration(
            "9_trigger",
            "SELECT diesel_manage_updated_at('public.plans');",
            None,
        );
    let set = p.load().unwrap();
    let got = scopes(&set);
    let want: Vec<(String, Scope)> = (1..=9)
        .map(|v| {
            let scope = if v == 9 {
                Scope::Shared
            } else {
                Scope::Isolated
            };
            (v.to_string(), scope)
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_project_default_scope_decides_migrations_that_touch_no_table() {
    let p = Project::new();
    p.migration(
        "1_fn",
        "CREATE FUNCTION one() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql;",
        None,
    )
    .migration("2_noop", "SELECT 1;", None)
    .migration("3_orders", "ALTER TABLE orders ADD COLUMN x int;", None)
    .migration("4_mystery", "CREATE TABLE mystery (id int);", None);
    std::fs::write(
        p.dir.path().join("migrations/metadata.toml"),
        "appschema_default_scope = \"shared\"\n",
    )
    .unwrap();
    // A living table nothing decides still needs a declaration: the default
    // is for migrations that touch no table.
    let err = p.load().unwrap_err();
    assert!(err.contains("4_mystery"), "{err}");
    assert!(!err.contains("1_fn") && !err.contains("2_noop"), "{err}");
    std::fs::remove_dir_all(p.path("4_mystery")).unwrap();
    assert_eq!(
        scopes(&p.load().unwrap()),
        [
            ("1".into(), Scope::Shared),
            ("2".into(), Scope::Shared),
            ("3".into(), Scope::Isolated)
        ]
    );
    std::fs::write(
        p.dir.path().join("migrations/metadata.toml"),
        "appschema_default = \"shared\"\n",
    )
    .unwrap();
    let err = p.load().unwrap_err();
    assert!(err.contains("unknown key `appschema_default`"), "{err}");
}

#[test]
fn an_isolated_migration_that_no_transaction_can_hold_is_refused_when_planning() {
    let p = Project::new();
    p.migration("1_orders", "CREATE TABLE orders (id int);", None)
        .migration(
            "2_index",
            "CREATE INDEX CONCURRENTLY orders_id ON orders (id); ALTER SYSTEM SET work_mem = '8MB';",
            Some("run_in_transaction = false\nappschema_scope = \"isolated\""),
        );
    let err = p.load().unwrap_err();
    assert_eq!(
        err,
        format!(
            "`{}` cannot run inside the transaction that creates a tenant's schema: \
             `ALTER SYSTEM SET work_mem = '8MB'` (server configuration) cannot run inside a \
             transaction; move that statement into a shared migration, or out of the migrations",
            p.path("2_index").display()
        )
    );
}

#[test]
fn citus_notes_name_the_shared_tables_tenants_reference_and_the_triggers_citus_refuses() {
    let p = Project::new();
    p.migration(
        "2024-01-01-000000_plans",
        "CREATE TABLE plans (id bigint PRIMARY KEY, name text NOT NULL);",
        None,
    )
    .migration(
        "2024-01-02-000000_orders",
        "CREATE TABLE orders (id bigint PRIMARY KEY, plan_id bigint REFERENCES plans (id));
         CREATE TABLE items (id bigint PRIMARY KEY);",
        None,
    )
    .migration(
        "2024-01-03-000000_renamed",
        "ALTER TABLE plans RENAME TO price_plans;",
        Some("appschema_scope = \"shared\""),
    )
    .migration(
        "2024-01-04-000000_touch",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
         CREATE TRIGGER items_touch BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION touch();",
        None,
    );
    let (set, notes) = appschema_planner::load_with_schema_files_and_citus_notes(
        &p.dir.path().join("migrations"),
        &[p.dir.path().join("src/schema.rs")],
        p.dir.path(),
    )
    .unwrap();
    assert_eq!(set.migrations().len(), 4);
    // By the name the isolated migration uses, and by its last name.
    assert_eq!(
        notes.reference_tables.iter().collect::<Vec<_>>(),
        ["plans", "price_plans"]
    );
    assert_eq!(notes.warnings.len(), 1, "{:?}", notes.warnings);
    let warning = notes.warnings[0].to_string();
    assert!(warning.contains("2024-01-04-000000_touch"), "{warning}");
    assert!(warning.contains("`items`"), "{warning}");
    assert!(
        warning.contains("citus.enable_unsafe_triggers"),
        "{warning}"
    );
}

// Issue 24: statement order, functions, types, schemas, extensions, and
// per-tenant objects named with the shared schema. The real histories are
// reduced excerpts under tests/fixtures/planner-*/ (UPSTREAM.md in each).

/// Plans a fixture's `migrations` with every table of its `schema.rs`
/// marked isolated (one application instance per tenant, as issue 24's
/// tester did), with no declarations and no default scope.
fn plan_all_isolated(fixture: &str, migrations: &str) -> Result<MigrationSet, String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let mut tables = TableScopes::new();
    tables
        .add_source(
            r#"#[appschema::isolated(file = "schema.rs")] pub mod tenant {}"#,
            &dir.join("marks.rs"),
            &dir,
        )
        .unwrap();
    appschema_planner::load(&dir.join(migrations), &tables).map_err(|e| e.to_string())
}

fn scope_of(set: &MigrationSet, version: &str) -> Scope {
    set.migrations()
        .iter()
        .find(|m| m.version() == version)
        .unwrap_or_else(|| panic!("no migration {version}"))
        .scope()
}

#[test]
fn a_table_dropped_and_created_again_in_one_migration_is_followed_in_statement_order() {
    // vaultwarden: sso_nonce created; dropped and re-created (twice); then
    // dropped by the migration creating the marked sso_auth.
    let set =
        plan_all_isolated("planner-vaultwarden", "migrations").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scopes(&set),
        [
            ("20230910133000".to_string(), Scope::Isolated),
            ("20240214170000".to_string(), Scope::Isolated),
            ("20240226170000".to_string(), Scope::Isolated),
            ("20250820120000".to_string(), Scope::Isolated),
        ]
    );
}

#[test]
fn statements_are_followed_in_order_drop_then_create_rename_chains_and_create_alter_drop() {
    let p = Project::new();
    p.migration("1_view", "CREATE VIEW recent AS SELECT * FROM orders;", None)
        .migration(
            "2_recreate",
            "DROP VIEW recent; CREATE VIEW recent AS SELECT id FROM orders;",
            None,
        )
        .migration("3_drop_view", "DROP VIEW recent;", None)
        .migration(
            "4_table_again",
            "CREATE TABLE scratch (id int); DROP TABLE scratch; CREATE TABLE scratch (id int);",
            None,
        )
        .migration(
            "5_chain",
            "ALTER TABLE scratch RENAME TO scratch2; ALTER TABLE scratch2 RENAME TO items_old; \
             ALTER TABLE items_old ADD FOREIGN KEY (id) REFERENCES orders (id);",
            None,
        )
        .migration(
            "6_create_alter_drop",
            "CREATE TABLE tmp (id int); ALTER TABLE tmp ADD COLUMN x int; DROP TABLE tmp; \
             CREATE TABLE tmp (id int); ALTER TABLE tmp ADD FOREIGN KEY (id) REFERENCES public.plans (id);",
            None,
        )
        .migration("7_tmp_alone", "ALTER TABLE tmp ADD COLUMN y int;", None);
    let err = p.load().unwrap_err();
    // The view re-created by 2 is the one 3 drops: isolated through what
    // it reads. The table re-created by 4 is the one 5 renames and links to
    // orders. In 6 the first `tmp` lives and dies alone; the second is
    // linked to nothing isolated: 6 and 7 stay undecided, 1–5 are decided.
    assert!(err.starts_with("2 problems"), "{err}");
    assert!(err.contains("6_create_alter_drop"), "{err}");
    assert!(err.contains("7_tmp_alone"), "{err}");
    let p = Project::new();
    p.migration(
        "1_view",
        "CREATE VIEW recent AS SELECT * FROM orders;",
        None,
    )
    .migration(
        "2_recreate",
        "DROP VIEW recent; CREATE VIEW recent AS SELECT id FROM orders;",
        None,
    )
    .migration("3_drop_view", "DROP VIEW recent;", None)
    .migration(
        "4_table_again",
        "CREATE TABLE scratch (id int); DROP TABLE scratch; CREATE TABLE scratch (id int);",
        None,
    )
    .migration(
        "5_chain",
        "ALTER TABLE scratch RENAME TO scratch2; ALTER TABLE scratch2 RENAME TO items_old; \
             ALTER TABLE items_old ADD FOREIGN KEY (id) REFERENCES orders (id);",
        None,
    );
    let set = p.load().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        scopes(&set).iter().all(|(_, s)| *s == Scope::Isolated),
        "{:?}",
        scopes(&set)
    );
}

#[test]
fn function_bodies_decide_functions_plpgsql_sql_and_begin_atomic() {
    let p = Project::new();
    p.migration(
        "1_trigger_fn",
        "CREATE OR REPLACE FUNCTION count_items() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF (TG_OP = 'INSERT') THEN
             UPDATE orders SET plan_id = plan_id + 1 WHERE id = NEW.id;
           END IF;
           RETURN NULL;
         END $$;",
        None,
    )
    .migration(
        "2_sql_fn",
        "CREATE FUNCTION plan_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM plans $$;",
        None,
    )
    .migration(
        "3_atomic_fn",
        "CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM items; END;",
        None,
    )
    .migration(
        "4_calls",
        "CREATE FUNCTION twice() RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN RETURN 2 * item_count(); END $$;",
        None,
    )
    .migration("5_alter", "ALTER FUNCTION count_items() SECURITY DEFINER;", None)
    .migration("6_drop", "DROP FUNCTION plan_count();", None)
    .migration("7_rename", "ALTER FUNCTION twice() RENAME TO double_items;", None)
    .migration("8_comment", "COMMENT ON FUNCTION double_items() IS 'x';", None);
    let set = p.load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scopes(&set),
        [
            ("1".to_string(), Scope::Isolated),
            ("2".to_string(), Scope::Shared),
            ("3".to_string(), Scope::Isolated),
            ("4".to_string(), Scope::Isolated),
            ("5".to_string(), Scope::Isolated),
            ("6".to_string(), Scope::Shared),
            ("7".to_string(), Scope::Isolated),
            ("8".to_string(), Scope::Isolated),
        ]
    );
}

#[test]
fn a_function_naming_no_table_is_shared_unless_only_isolated_migrations_call_it() {
    let p = Project::new();
    p.migration(
        "1_helper",
        "CREATE FUNCTION add_one(x int) RETURNS int LANGUAGE sql AS $$ SELECT x + 1 $$;",
        None,
    )
    .migration(
        "2_pure",
        "CREATE FUNCTION rank(score numeric) RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN floor(score); END $$;",
        None,
    )
    .migration("3_use", "UPDATE orders SET plan_id = add_one(plan_id);", None);
    let set = p.load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scope_of(&set, "1"), Scope::Isolated);
    assert_eq!(scope_of(&set, "2"), Scope::Shared);
    assert_eq!(scope_of(&set, "3"), Scope::Isolated);
    // The guess never decides a table nothing else decides.
    p.migration(
        "4_with_table",
        "CREATE TABLE audit (id int); \
         CREATE FUNCTION now_utc() RETURNS timestamp LANGUAGE sql AS $$ SELECT now() $$;",
        None,
    );
    let err = p.load().unwrap_err();
    assert!(
        err.contains("4_with_table") && err.contains("(`audit`, `now_utc()`)"),
        "{err}"
    );
}

#[test]
fn types_follow_their_creation_through_add_value_rename_and_drop() {
    let p = Project::new();
    p.migration(
        "1_enum",
        "CREATE TYPE mood AS ENUM ('ok'); ALTER TABLE orders ADD COLUMN m mood;",
        None,
    )
    .migration("2_add_value", "ALTER TYPE mood ADD VALUE 'sad';", None)
    .migration("3_rename", "ALTER TYPE mood RENAME TO feeling;", None)
    .migration(
        "4_rename_value",
        "ALTER TYPE feeling RENAME VALUE 'ok' TO 'fine';",
        None,
    )
    .migration(
        "5_shared_type",
        "CREATE TYPE tier AS ENUM ('free'); ALTER TABLE plans ADD COLUMN t tier;",
        None,
    )
    .migration("6_shared_add", "ALTER TYPE tier ADD VALUE 'pro';", None)
    .migration(
        "7_drop",
        "ALTER TABLE orders DROP COLUMN m; DROP TYPE feeling;",
        None,
    )
    .migration(
        "8_composite",
        "CREATE TYPE line AS (qty int); ALTER TABLE items ADD COLUMN l line;",
        None,
    )
    .migration(
        "9_add_attribute",
        "ALTER TYPE line ADD ATTRIBUTE price numeric;",
        None,
    );
    let set = p.load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scopes(&set),
        [
            ("1".to_string(), Scope::Isolated),
            ("2".to_string(), Scope::Isolated),
            ("3".to_string(), Scope::Isolated),
            ("4".to_string(), Scope::Isolated),
            ("5".to_string(), Scope::Shared),
            ("6".to_string(), Scope::Shared),
            ("7".to_string(), Scope::Isolated),
            ("8".to_string(), Scope::Isolated),
            ("9".to_string(), Scope::Isolated),
        ]
    );
}

#[test]
fn a_schema_its_objects_and_an_extension_alone_are_shared() {
    let p = Project::new();
    p.migration("1_schema", "CREATE SCHEMA utils;", None)
        .migration(
            "2_in_schema",
            "CREATE TABLE utils.saved_ddl (id int); \
             CREATE FUNCTION utils.restore() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM utils.saved_ddl; END $$;",
            None,
        )
        .migration("3_ext", "CREATE EXTENSION IF NOT EXISTS pgcrypto;", None)
        .migration(
            "4_ext_with_tables",
            "CREATE EXTENSION IF NOT EXISTS citext; ALTER TABLE orders ADD COLUMN email citext;",
            None,
        );
    let set = p.load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scopes(&set),
        [
            ("1".to_string(), Scope::Shared),
            ("2".to_string(), Scope::Shared),
            ("3".to_string(), Scope::Shared),
            ("4".to_string(), Scope::Isolated),
        ]
    );
    let p = Project::new();
    p.migration(
        "1_mixed",
        "CREATE SCHEMA audit; ALTER TABLE items ADD COLUMN x int;",
        None,
    );
    let err = p.load().unwrap_err();
    assert!(
        err.contains("touches shared tables (`schema audit`) and isolated tables (`items`)"),
        "{err}"
    );
}

#[test]
fn the_real_history_decides_schema_enum_and_trigger_function_migrations_without_declarations() {
    let set =
        plan_all_isolated("planner-lemmy", "decided/migrations").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        scopes(&set),
        [
            ("20200907231141".to_string(), Scope::Shared),
            ("20230414175955".to_string(), Scope::Isolated),
            ("20230617175955".to_string(), Scope::Isolated),
            ("20230727134652".to_string(), Scope::Isolated),
        ]
    );
}

#[test]
fn an_isolated_migration_naming_per_tenant_objects_with_the_shared_schema_is_refused_listing_each()
{
    let err = plan_all_isolated("planner-lemmy", "shared_qualified/migrations").unwrap_err();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "tests/fixtures/planner-lemmy/shared_qualified/migrations/2022-11-20-032430_sticky_local",
    );
    assert_eq!(
        err,
        format!(
            "`{}` is isolated but names per-tenant objects with the shared schema \
             (`public.post`, `public.post_aggregates_featured_community()`, \
             `public.post_aggregates_featured_local()`): in a tenant these resolve to the shared \
             schema, where they do not exist; drop the `public.` qualification so that each \
             tenant's `search_path` finds its own",
            path.display()
        )
    );
    // Also inside a function's body: it runs in the tenant, and reaches the
    // shared schema's table.
    let p = Project::new();
    p.migration(
        "1_fn",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN UPDATE public.orders SET plan_id = 1; UPDATE public.items SET id = 1; RETURN NULL; END $$;",
        None,
    );
    let err = p.load().unwrap_err();
    assert!(
        err.contains("with the shared schema (`public.items`, `public.orders`)"),
        "{err}"
    );
    // Shared objects may be named with the shared schema, in any migration.
    let p = Project::new();
    p.migration(
        "1_fn",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE orders SET plan_id = 1; RETURN NULL; END $$;",
        None,
    )
    .migration(
        "2_trigger",
        "CREATE TRIGGER t AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION touch(); \
         ALTER TABLE orders ADD FOREIGN KEY (plan_id) REFERENCES public.plans (id);",
        None,
    );
    let set = p.load().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(scope_of(&set, "2"), Scope::Isolated);
}
