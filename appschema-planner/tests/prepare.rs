//! Offline mode: `prepare` writes the plan, `appschema-build` embeds it
//! without parsing SQL, and refuses it once a file it was made from changed.

use std::path::{Path, PathBuf};

use appschema_build::{load_prepared, Plan};
use appschema_planner::build::embedded_sources;

const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared {
    diesel::table! { public.plans (id) { id -> Int8, name -> Text } }
}
#[appschema::isolated]
pub mod tenant {
    diesel::table! { orders (id) { id -> Int8, plan_id -> Int8 } }
}
"#;

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// A shared migration, an isolated one, and an isolated
    /// `run_in_transaction = false` one (statements and new-schema form).
    fn new() -> Project {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(p.root().join("src")).unwrap();
        std::fs::write(p.root().join("src/schema.rs"), SCHEMA).unwrap();
        p.migration(
            "2024-01-01-000000_plans",
            "CREATE TABLE public.plans (id int8 PRIMARY KEY, name text NOT NULL);",
            None,
        );
        p.migration(
            "2024-01-02-000000_orders",
            "CREATE TABLE orders (id int8 PRIMARY KEY, plan_id int8 REFERENCES public.plans);",
            None,
        );
        p.migration(
            "2024-01-03-000000_orders_idx",
            "CREATE INDEX CONCURRENTLY orders_plan ON orders (plan_id);\nVACUUM orders;\n",
            Some("run_in_transaction = false\n"),
        );
        p
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn migration(&self, name: &str, up: &str, metadata: Option<&str>) {
        let d = self.root().join("migrations").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("up.sql"), up).unwrap();
        std::fs::write(d.join("down.sql"), format!("-- undo {name}\n")).unwrap();
        if let Some(m) = metadata {
            std::fs::write(d.join("metadata.toml"), m).unwrap();
        }
    }

    fn plan_file(&self) -> PathBuf {
        self.root().join("appschema-plan.toml")
    }

    /// What `appschema-cli prepare` does, run from the project's root.
    fn prepare(&self) -> Plan {
        let plan = appschema_planner::prepare(
            Path::new("migrations"),
            &["src/schema.rs".into()],
            self.root(),
            Path::new("appschema-plan.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(self.plan_file(), plan.to_toml()).unwrap();
        plan
    }

    fn stale_message(&self) -> String {
        load_prepared(&self.plan_file()).unwrap_err().to_string()
    }
}

#[test]
fn a_prepared_plan_embeds_the_same_migration_set_as_planning() {
    let p = Project::new();
    let plan = p.prepare();
    assert_eq!(plan.migrations_dir, "migrations");
    assert_eq!(
        plan.inputs.keys().collect::<Vec<_>>(),
        ["src/schema.rs"],
        "the markings are an input of the plan"
    );
    let idx = &plan.migrations[2];
    assert_eq!(idx.scope, "isolated");
    assert_eq!(
        idx.statements.as_deref(),
        Some(
            &[
                "CREATE INDEX CONCURRENTLY orders_plan ON orders (plan_id)".to_string(),
                "VACUUM orders".to_string()
            ][..]
        )
    );
    assert_eq!(
        idx.new_schema_sql.as_deref(),
        Some("CREATE INDEX  orders_plan ON orders (plan_id);\n")
    );
    // sha256sum of the file, as a reader can check it.
    assert_eq!(
        idx.files["metadata.toml"],
        appschema_build::sha256_hex(b"run_in_transaction = false\n")
    );

    let planned = appschema_planner::load_with_schema_files(
        &p.root().join("migrations"),
        &[p.root().join("src/schema.rs")],
        p.root(),
    )
    .unwrap();
    let embedded = load_prepared(&p.plan_file()).unwrap();
    assert_eq!(embedded, embedded_sources(&planned));

    // Both build steps write the same file but for the header naming its source.
    let from_plan = p.root().join("from_plan.rs");
    let from_planner = p.root().join("from_planner.rs");
    appschema_build::generate_prepared(&p.plan_file(), &from_plan).unwrap();
    appschema_planner::build::generate(
        &p.root().join("migrations"),
        &[p.root().join("src/schema.rs")],
        p.root(),
        &from_planner,
    )
    .unwrap();
    let body = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        text.split_once('\n').unwrap().1.to_string()
    };
    assert_eq!(body(&from_plan), body(&from_planner));
}

#[test]
fn the_plan_file_reads_back_as_prepare_wrote_it() {
    let p = Project::new();
    let plan = p.prepare();
    let text = std::fs::read_to_string(p.plan_file()).unwrap();
    assert_eq!(Plan::parse(&text, &p.plan_file()).unwrap(), plan);
}

#[test]
fn a_plan_older_than_an_edited_migration_is_refused_with_the_command_to_run() {
    let p = Project::new();
    p.prepare();
    let up = p.root().join("migrations/2024-01-02-000000_orders/up.sql");
    std::fs::write(&up, "CREATE TABLE orders (id int8 PRIMARY KEY);").unwrap();
    let err = p.stale_message();
    assert!(
        err.contains("migration `2024-01-02-000000_orders` changed since (up.sql)"),
        "{err}"
    );
    assert!(
        err.contains("run `appschema-cli prepare` and commit the file"),
        "{err}"
    );
    p.prepare();
    assert!(load_prepared(&p.plan_file()).is_ok());
}

#[test]
fn a_plan_older_than_an_added_or_removed_migration_is_refused() {
    let p = Project::new();
    p.prepare();
    p.migration(
        "2024-01-04-000000_items",
        "ALTER TABLE orders ADD note text;",
        None,
    );
    let err = p.stale_message();
    assert!(
        err.contains("migration `2024-01-04-000000_items` was added since"),
        "{err}"
    );
    std::fs::remove_dir_all(p.root().join("migrations/2024-01-04-000000_items")).unwrap();
    std::fs::remove_dir_all(p.root().join("migrations/2024-01-03-000000_orders_idx")).unwrap();
    let err = p.stale_message();
    assert!(
        err.contains("migration `2024-01-03-000000_orders_idx` was removed since"),
        "{err}"
    );
}

#[test]
fn a_plan_older_than_its_markings_or_a_new_directory_default_is_refused() {
    let p = Project::new();
    p.prepare();
    std::fs::write(
        p.root().join("src/schema.rs"),
        SCHEMA.replace(
            "#[appschema::shared]",
            "#[appschema::shared(schema = \"public\")]",
        ),
    )
    .unwrap();
    let err = p.stale_message();
    assert!(err.contains("`src/schema.rs` changed since"), "{err}");
    p.prepare();
    std::fs::write(
        p.root().join("migrations/metadata.toml"),
        "appschema_default_scope = \"shared\"\n",
    )
    .unwrap();
    let err = p.stale_message();
    assert!(
        err.contains("`migrations/metadata.toml` was added since"),
        "{err}"
    );
}

#[test]
fn a_missing_plan_file_says_how_to_write_one() {
    let p = Project::new();
    let err = p.stale_message();
    assert!(err.contains("appschema-plan.toml"), "{err}");
    assert!(err.contains("appschema-cli prepare"), "{err}");
}
