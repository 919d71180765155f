//! Reading a diesel migrations directory: one [`Source`] per migration
//! directory, before any planning.

use std::path::{Path, PathBuf};

use super::PlanError;
use crate::Scope;

/// A migration directory as read from disk, before planning.
pub(super) struct Source {
    pub(super) dir: PathBuf,
    pub(super) version: String,
    pub(super) name: String,
    pub(super) up: String,
    pub(super) down: Option<String>,
    pub(super) declared: Option<Scope>,
    pub(super) run_in_transaction: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PlanError + '_ {
    move |error| PlanError::Io {
        path: path.to_path_buf(),
        error,
    }
}

pub(super) fn read_dir(dir: &Path) -> Result<Vec<Result<Source, PlanError>>, PlanError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    entries.sort();
    Ok(entries
        .into_iter()
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            // diesel skips dot files; loose files (a README, .keep) are not migrations.
            p.is_dir() && !name.is_some_and(|n| n.starts_with('.'))
        })
        .map(|p| read_one(&p))
        .collect())
}

fn read_one(dir: &Path) -> Result<Source, PlanError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let malformed = |why: &str| PlanError::Malformed {
        path: dir.to_path_buf(),
        why: why.to_string(),
    };
    let Some((raw_version, _)) = name.split_once('_') else {
        return Err(malformed(
            "its name must be `<version>_<name>` (e.g. `2024-01-31-120000_create_orders`)",
        ));
    };
    let version = raw_version.replace('-', "");
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit()) || version.len() > 50 {
        return Err(malformed(
            "its version (before the first `_`) must be digits and dashes, at most 50 characters",
        ));
    }
    let up_path = dir.join("up.sql");
    if !up_path.is_file() {
        return Err(malformed("it has no `up.sql`"));
    }
    let up = std::fs::read_to_string(&up_path).map_err(io(&up_path))?;
    let down_path = dir.join("down.sql");
    let down = if down_path.is_file() {
        Some(std::fs::read_to_string(&down_path).map_err(io(&down_path))?)
    } else {
        None
    };
    let meta_path = dir.join("metadata.toml");
    let mut declared = None;
    let mut run_in_transaction = true;
    if meta_path.is_file() {
        let text = std::fs::read_to_string(&meta_path).map_err(io(&meta_path))?;
        let meta_err = |message: String| PlanError::Metadata {
            path: meta_path.clone(),
            message,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e| meta_err(format!("invalid TOML: {e}")))?;
        if let Some(v) = table.get("run_in_transaction") {
            run_in_transaction = v
                .as_bool()
                .ok_or_else(|| meta_err("`run_in_transaction` must be true or false".into()))?;
        }
        if let Some(v) = table.get("appschema_scope") {
            let s = v.as_str().unwrap_or_default();
            declared = Some(
                s.parse::<Scope>()
                    .map_err(|e| meta_err(format!("`appschema_scope`: {e}")))?,
            );
        }
    }
    Ok(Source {
        dir: dir.to_path_buf(),
        version,
        name,
        up,
        down,
        declared,
        run_in_transaction,
    })
}

/// The file in the migrations directory (beside the migrations, which
/// diesel ignores as it is no directory) holding project-wide planner
/// settings.
pub const DIRECTORY_METADATA: &str = "metadata.toml";

/// The project-wide scope of migrations that touch no table (functions,
/// extensions, types, `SELECT 1`): `appschema_default_scope` in the
/// migrations directory's own `metadata.toml`.
pub(super) fn read_default_scope(dir: &Path) -> Result<Option<Scope>, PlanError> {
    let path = dir.join(DIRECTORY_METADATA);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let meta_err = |message: String| PlanError::Metadata {
        path: path.clone(),
        message,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e| meta_err(format!("invalid TOML: {e}")))?;
    for key in table.keys() {
        if key != "appschema_default_scope" {
            return Err(meta_err(format!(
                "unknown key `{key}`: the migrations directory's metadata.toml takes only \
                 `appschema_default_scope`"
            )));
        }
    }
    match table.get("appschema_default_scope") {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .unwrap_or_default()
            .parse::<Scope>()
            .map(Some)
            .map_err(|e| meta_err(format!("`appschema_default_scope`: {e}"))),
    }
}
