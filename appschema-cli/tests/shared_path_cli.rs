//! `--search-path` (or `APPSCHEMA_SEARCH_PATH`, or `search_path` in
//! appschema.toml) reaches every subcommand that runs tenant SQL: a
//! function and a type living in an `extensions` schema, used unqualified
//! by the migrations, work in `migrate`, in every way `createschema` builds
//! a tenant, in `clone`, `import`, `exec` and `psql`. And the CLI prints no
//! password, even in an error quoting the connection string.

use std::path::Path;

use appschema_tempdb::TestDb;
use assert_cmd::Command;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared { diesel::table! { public.plans (id) { id -> Int8, label -> Text } } }
#[appschema::isolated]
pub mod tenant { diesel::table! { notes (id) { id -> Int8, greeting -> Text } } }
"#;

const EXTENSIONS: &str = "CREATE SCHEMA extensions;
CREATE FUNCTION extensions.greet(who text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'hello ' || who $$;
CREATE TYPE extensions.mood AS ENUM ('calm', 'busy');";

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
    migration(
        dir.path(),
        "2024-01-01-000000_plans",
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY, label text NOT NULL DEFAULT greet('plan'));",
    );
    migration(
        dir.path(),
        "2024-01-02-000000_notes",
        "CREATE TABLE notes (id bigserial PRIMARY KEY, mood mood NOT NULL DEFAULT 'calm',
             greeting text NOT NULL DEFAULT greet('tenant'));",
    );
    dir
}

fn migration(root: &Path, name: &str, up: &str) {
    let d = root.join("migrations").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("up.sql"), up).unwrap();
    std::fs::write(d.join("down.sql"), "").unwrap();
}

/// Runs the CLI in `dir` with `env` set (and nothing inherited that
/// configures it).
fn run(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut c = Command::cargo_bin("appschema-cli").unwrap();
    c.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env_remove("APPSCHEMA_SEARCH_PATH");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

fn text(conn: &mut PgConnection, sql: &str) -> String {
    diesel::sql_query(sql)
        .get_result::<Row>(conn)
        .unwrap()
        .value
}

#[test]
fn every_subcommand_that_runs_tenant_sql_uses_the_configured_search_path() {
    let db = TestDb::new();
    let mut conn = db.conn();
    conn.batch_execute(EXTENSIONS).unwrap();
    let dir = project();
    let url = db.url();
    let ok = |args: &[&str], env: &[(&str, &str)]| {
        let (code, out, err) = run(dir.path(), env, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        out
    };

    // Without it, the migrations cannot find `greet`: the check has teeth.
    let (code, out, err) = run(dir.path(), &[("DATABASE_URL", url)], &["migrate"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("greet"), "{out}{err}");

    // The flag.
    let flag = [("DATABASE_URL", url)];
    ok(&["--search-path", "public, extensions", "migrate"], &flag);
    // The environment.
    let env = [
        ("DATABASE_URL", url),
        ("APPSCHEMA_SEARCH_PATH", "public,extensions"),
    ];
    ok(&["createschema", "m.test"], &env);
    ok(&["schematemplate", "--output", "template.sql"], &env);
    ok(
        &[
            "createschema",
            "t.test",
            "--from",
            "template",
            "--template",
            "template.sql",
        ],
        &env,
    );
    // appschema.toml.
    std::fs::write(
        dir.path().join("appschema.toml"),
        format!("database_url = {url:?}\nsearch_path = \"public, extensions\"\n"),
    )
    .unwrap();
    ok(&["spares", "--count", "1"], &[]);
    ok(&["createschema", "s.test", "--from", "spare"], &[]);
    ok(&["clone", "m.test", "c.test"], &[]);
    ok(&["export", "m.test", "-o", "m.tenant"], &[]);
    ok(&["import", "m.tenant", "--as", "i.test"], &[]);
    ok(
        &[
            "exec",
            "--sql",
            "INSERT INTO notes (greeting) VALUES (greet(current_schema()))",
        ],
        &[],
    );
    for schema in ["m_test", "t_test", "s_test", "c_test", "i_test"] {
        assert_eq!(
            text(
                &mut conn,
                &format!("SELECT mood::text || ' ' || greeting AS value FROM {schema}.notes")
            ),
            format!("calm hello {schema}")
        );
    }
    let out = ok(
        &[
            "psql",
            "m.test",
            "--",
            "-XAtc",
            "SELECT greet(mood::text) FROM notes",
        ],
        &[],
    );
    assert_eq!(out.trim(), "hello calm");
}

#[test]
fn the_cli_prints_no_password_even_when_an_error_quotes_the_url() {
    let db = TestDb::new();
    let dir = project();
    let secret = "Hunter2-not-for-logs";
    // libpq refuses the bad escape and quotes the password it is in.
    let url = db
        .url()
        .replacen("postgres@", &format!("postgres:{secret}%zz@"), 1);
    for args in [&["migrate"][..], &["list"], &["exec", "--sql", "SELECT 1"]] {
        let (code, out, err) = run(dir.path(), &[("DATABASE_URL", &url)], args);
        assert_ne!(code, 0, "{args:?}: {out}{err}");
        assert!(err.contains("percent-encoded"), "{args:?}: {err}");
        assert!(
            !out.contains("Hunter2") && !err.contains("Hunter2"),
            "{args:?} printed the password: {out}{err}"
        );
    }
    // psql's command line, printed before it runs, hides it too.
    let url = db
        .url()
        .replacen("postgres@", &format!("postgres:{secret}@"), 1);
    let mut conn = db.conn();
    appschema_core::registry::install(&mut conn).unwrap();
    conn.batch_execute(EXTENSIONS).unwrap();
    let (code, _, err) = run(
        dir.path(),
        &[("DATABASE_URL", &url)],
        &["--search-path", "public, extensions", "migrate"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        dir.path(),
        &[
            ("DATABASE_URL", &url),
            ("APPSCHEMA_SEARCH_PATH", "public, extensions"),
        ],
        &["createschema", "p.test"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(
        dir.path(),
        &[("DATABASE_URL", &url)],
        &["psql", "p.test", "--", "-XAtc", "SELECT 1"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("postgres:***@"), "{err}");
    assert!(!err.contains("Hunter2"), "{err}");
}
