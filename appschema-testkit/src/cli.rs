//! The CLI tests' temp project and the real `appschema-cli` binary.

use std::path::Path;

use assert_cmd::Command;

/// The marked `src/schema.rs` of [`project`]: `public.plans` shared,
/// `orders` isolated.
pub const SCHEMA: &str = r#"
#[appschema::shared]
pub mod shared { diesel::table! { public.plans (id) { id -> Int8 } } }
#[appschema::isolated]
pub mod tenant { diesel::table! { orders (id) { id -> Int8 } } }
"#;

/// A temp project with [`SCHEMA`] and two migrations: the shared
/// `2024-01-01-000000_plans` and the isolated `2024-01-02-000000_orders`
/// (whose `orders` references `public.plans`).
pub fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/schema.rs"), SCHEMA).unwrap();
    migration(
        dir.path(),
        "2024-01-01-000000_plans",
        "CREATE TABLE public.plans (id bigserial PRIMARY KEY);",
    );
    migration(
        dir.path(),
        "2024-01-02-000000_orders",
        "CREATE TABLE orders (id bigserial PRIMARY KEY, plan_id bigint REFERENCES public.plans (id));",
    );
    dir
}

/// Writes the diesel migration `migrations/<name>` of the project at `root`:
/// `up.sql` is `up`, `down.sql` empty.
pub fn migration(root: &Path, name: &str, up: &str) {
    let d = root.join("migrations").join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("up.sql"), up).unwrap();
    std::fs::write(d.join("down.sql"), "").unwrap();
}

/// The `appschema-cli` binary of this build, run in `dir`, with
/// `DATABASE_URL` unset.
pub fn cli(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("appschema-cli").unwrap();
    c.current_dir(dir).env_remove("DATABASE_URL");
    c
}

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Out {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `c` to its end.
pub fn run(c: &mut Command) -> Out {
    let o = c.output().unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}
