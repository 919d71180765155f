//! `appschema-cli migration generate`: a new diesel-style migration
//! directory whose version no other migration has.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use appschema_core::Scope;

/// Creates `<dir>/<version>_<name>/` with up.sql, down.sql and a
/// metadata.toml declaring `scope`.
///
/// The version is diesel's (`YYYY-MM-DD-HHMMSS`, UTC): the current second,
/// or one second after the newest migration of that format already in `dir`
/// when that is not earlier. Two runs within one second therefore get two
/// versions, in the order they ran, and a new migration always sorts after
/// the existing ones.
pub(crate) fn generate(dir: &Path, name: &str, scope: &str) -> Result<ExitCode> {
    let scope: Scope = scope.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("migration name `{name}` must be letters, digits and `_`");
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let mut secs = match newest_version(dir)? {
        Some(newest) if newest >= now => newest + 1,
        _ => now,
    };
    // `create_dir`, not `create_dir_all`: a directory of the same name made
    // meanwhile (another run in the same second) is never reused.
    let path = loop {
        let path: PathBuf = dir.join(format!("{}_{name}", timestamp(secs)));
        match std::fs::create_dir(&path) {
            Ok(()) => break path,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => secs += 1,
            Err(e) => {
                return Err(e).with_context(|| format!("failed to create `{}`", path.display()))
            }
        }
    };
    for (file, text) in [
        ("up.sql", "-- Your SQL goes here\n".to_string()),
        (
            "down.sql",
            "-- This file should undo anything in `up.sql`\n".to_string(),
        ),
        ("metadata.toml", format!("appschema_scope = \"{scope}\"\n")),
    ] {
        let file = path.join(file);
        std::fs::write(&file, text)
            .with_context(|| format!("failed to write `{}`", file.display()))?;
    }
    println!("created {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// The newest version in `dir` written in diesel's format, as seconds since
/// the epoch (other versions cannot collide with one in that format).
fn newest_version(dir: &Path) -> Result<Option<i64>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("failed to read `{}`", dir.display()))?;
    let mut newest = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to read `{}`", dir.display()))?;
        let name = entry.file_name();
        let Some((version, _)) = name.to_str().and_then(|n| n.split_once('_')) else {
            continue;
        };
        if let Some(secs) = parse_timestamp(version) {
            newest = newest.max(Some(secs));
        }
    }
    Ok(newest)
}

/// diesel's version format, UTC: `YYYY-MM-DD-HHMMSS`.
pub(crate) fn timestamp(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The seconds since the epoch of a version in diesel's format
/// (`YYYY-MM-DD-HHMMSS`); `None` for any other version.
fn parse_timestamp(version: &str) -> Option<i64> {
    let b = version.as_bytes();
    if b.len() != 17 || b[4] != b'-' || b[7] != b'-' || b[10] != b'-' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = version.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(13..15)?, num(15..17)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::{parse_timestamp, timestamp};

    #[test]
    fn timestamps_have_diesels_format_and_parse_back() {
        for secs in [0, 951_782_400, 1_700_000_000, 1_798_761_599, 4_102_444_800] {
            let t = timestamp(secs);
            assert_eq!(t.len(), 17, "{t}");
            assert_eq!(parse_timestamp(&t), Some(secs), "{t}");
        }
        assert_eq!(timestamp(1_700_000_000), "2023-11-14-221320");
        assert_eq!(parse_timestamp("2024-13-01-000000"), None);
        assert_eq!(parse_timestamp("20240101000000"), None);
        assert_eq!(parse_timestamp("2024-01-01-0000+0"), None);
    }
}
