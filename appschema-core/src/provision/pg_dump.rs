//! Finding and running `pg_dump`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::TemplateError;

/// The `pg_dump` to use: `APPSCHEMA_PG_DUMP` if set, else the first on
/// `PATH`, else the newest `/usr/lib/postgresql/<version>/bin/pg_dump`
/// (where Debian keeps it). pg_dump must be at least the server's version.
pub fn find_pg_dump() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("APPSCHEMA_PG_DUMP").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    if let Some(paths) = std::env::var_os("PATH") {
        if let Some(found) = std::env::split_paths(&paths)
            .map(|dir| dir.join("pg_dump"))
            .find(|p| p.is_file())
        {
            return Some(found);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let path = entry.path().join("bin/pg_dump");
            path.is_file().then_some((version, path))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path)
}

/// What `pg_dump --no-owner --schema SCHEMA` writes with the `extra`
/// arguments (a section, a snapshot). `schema` must be a validated
/// [`crate::SchemaName`]: `[a-z0-9_]` has no pattern characters, so
/// `--schema` matches exactly it.
pub(crate) fn dump_schema_with(
    database_url: &str,
    schema: &str,
    extra: &[&str],
) -> Result<String, TemplateError> {
    let pg_dump = find_pg_dump().ok_or_else(|| TemplateError::PgDump {
        path: "pg_dump".into(),
        message: "not found in APPSCHEMA_PG_DUMP, PATH or /usr/lib/postgresql/*/bin".into(),
    })?;
    run(&pg_dump, database_url, schema, extra)
}

/// The `pg_dump` command for `schema`: the password of `database_url` in
/// its environment (`PGPASSWORD`), not on its command line, where `ps`
/// shows it to every user of the machine.
fn command(pg_dump: &Path, database_url: &str, schema: &str, extra: &[&str]) -> Command {
    let (url, password) = crate::redact::split_password(database_url);
    let mut cmd = Command::new(pg_dump);
    cmd.args(extra)
        .args(["--no-owner", "--schema", schema, "--dbname", &url]);
    if let Some(password) = password {
        cmd.env("PGPASSWORD", password);
    }
    cmd
}

fn run(
    pg_dump: &Path,
    database_url: &str,
    schema: &str,
    extra: &[&str],
) -> Result<String, TemplateError> {
    let fail = |message: String| TemplateError::PgDump {
        path: pg_dump.display().to_string(),
        message,
    };
    let output = command(pg_dump, database_url, schema, extra)
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !output.status.success() {
        return Err(fail(format!(
            "{}: {}",
            output.status,
            // pg_dump quotes a connection string it cannot parse.
            crate::redact::redact_secrets(
                String::from_utf8_lossy(&output.stderr).trim(),
                database_url
            )
        )));
    }
    String::from_utf8(output.stdout).map_err(|e| fail(format!("output is not UTF-8: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_in_the_environment_not_on_the_command_line() {
        let cmd = command(
            Path::new("pg_dump"),
            "postgres://app:s3cret@db/app",
            "acme",
            &[],
        );
        assert!(
            cmd.get_args()
                .all(|a| !a.to_string_lossy().contains("s3cret")),
            "{:?}",
            cmd.get_args().collect::<Vec<_>>()
        );
        assert!(cmd
            .get_envs()
            .any(|(k, v)| k == "PGPASSWORD" && v == Some("s3cret".as_ref())));
    }
}
