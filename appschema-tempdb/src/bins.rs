//! Finding PostgreSQL's server binaries.

use std::path::{Path, PathBuf};

use crate::Error;

/// The directory holding `initdb`, `postgres` and friends.
#[derive(Debug, Clone)]
pub(crate) struct PgBins {
    dir: PathBuf,
}

impl PgBins {
    /// `APPSCHEMA_PG_BIN` if set, else the directory of `initdb` on `PATH`,
    /// else the newest `/usr/lib/postgresql/<version>/bin` (Debian and
    /// Ubuntu keep the server binaries there, off `PATH`).
    pub(crate) fn find() -> Result<PgBins, Error> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os("APPSCHEMA_PG_BIN") {
            candidates.push(dir.into());
        }
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path));
        }
        candidates.extend(versioned_dirs("/usr/lib/postgresql"));
        candidates.push("/usr/local/pgsql/bin".into());
        candidates
            .into_iter()
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
            .map(|dir| PgBins { dir })
            .ok_or_else(|| {
                Error::new(
                    "no PostgreSQL server binaries found (initdb and postgres, looked on PATH and \
                     under /usr/lib/postgresql/*/bin): install them (Debian/Ubuntu: \
                     `apt-get install postgresql`), set APPSCHEMA_PG_BIN to their directory, or \
                     set DATABASE_URL to use a running server",
                )
            })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }
}

/// `<root>/<version>/bin`, highest version first.
fn versioned_dirs(root: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u32>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<Vec<u32>, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}
