//! Session hygiene: what a pooled session may carry from one checkout to the
//! next, and the statements that return it to its connect-time state.
//!
//! `search_path` is not the only session state. Temporary tables and views
//! (searched *before* the tenant's schema), holdable cursors, `LISTEN`
//! registrations and notifications already received, settings (`SET`,
//! `set_config(…, false)`, custom `app.*` ones that row-level security
//! reads), `SET ROLE` / `SET SESSION AUTHORIZATION`, `lastval()` and session
//! advisory locks all survive a checkout and can hand one tenant's rows, or
//! one user's identity, to the next. Application SQL text cannot prove a
//! session clean (a PL/pgSQL function or a trigger can create temp tables,
//! `LISTEN` or call `set_config`), so every checkout resets or checks on the
//! server.
//!
//! What a checkout does is `DISCARD ALL` minus `DEALLOCATE ALL` and
//! `DISCARD PLANS` (which would throw away diesel's prepared statements),
//! split by cost:
//!
//! - reset unconditionally, in the checkout's own message: `RESET ALL`,
//!   `CLOSE ALL`, `DISCARD TEMP`, `DISCARD SEQUENCES`, and
//!   `pg_advisory_unlock_all()` inside the switch statement;
//! - checked in the switch statement, and reset by a second message only when
//!   found: a changed role or session authorization (`SET SESSION
//!   AUTHORIZATION DEFAULT` costs the server as much as all of the above
//!   together), `LISTEN` registrations (`UNLISTEN *`), and transaction
//!   characteristics other than the defaults (the message's transaction
//!   began before its `RESET ALL`, and a unit's `BEGIN` appended to the
//!   message keeps that transaction: `RESET default_transaction_*`).
//!
//! Notifications libpq already received are drained on the client after
//! every checkout. `random()` is reseeded with a fresh client-side seed
//! inside the switch statement (`setseed()` survives `RESET ALL` and
//! `DISCARD ALL`). A transaction-scoped unit also refuses a transaction that
//! began with characteristics other than the defaults (an earlier client's
//! `SET SESSION CHARACTERISTICS`, applied by `BEGIN` before the unit's reset
//! could undo it): [`DIRTY_UNLISTEN`] resets them and the unit starts again.
//!
//! State the client keeps: diesel's per-connection cache of custom type
//! OIDs, filled by name through the path, is emptied when a checkout is for
//! another path than the connection's last ([`keep_types_resolved_on`]).

use std::borrow::Cow;

use diesel::pg::{GetPgMetadataCache, PgMetadataCache, PgMetadataCacheKey};
use diesel::PgConnection;

/// The unconditional part of a [`SharedPool`](super::SharedPool) checkout,
/// sent in the same simple-protocol message as (and before) the switch:
/// `RESET ALL` (every setting back to its connect-time value: the
/// connection's start-up options carry diesel's), `CLOSE ALL` (holdable
/// cursors), `DISCARD TEMP` (temporary tables, views, sequences, types,
/// functions) and `DISCARD SEQUENCES` (`lastval()`, `currval()`).
pub const CHECKOUT_RESET: &str = "RESET ALL; CLOSE ALL; DISCARD TEMP; DISCARD SEQUENCES; ";

/// Sent only when the switch reported a changed role, `LISTEN`
/// registrations or transaction characteristics other than the defaults:
/// its own transaction, so `UNLISTEN` has taken effect, and the next
/// message's transaction begins with the default characteristics, when the
/// switch runs again.
pub const DIRTY_RESET: &str = "SET SESSION AUTHORIZATION DEFAULT; UNLISTEN *; \
     RESET default_transaction_isolation; RESET default_transaction_read_only; \
     RESET default_transaction_deferrable";

/// The reset a transaction-scoped unit of work runs first, inside its own
/// transaction (no prepared statements: behind a transaction-pooling proxy
/// the server session is whichever one is free). Everything `DISCARD ALL`
/// does but `DEALLOCATE ALL` / `DISCARD PLANS` and `UNLISTEN *` (which
/// would only take effect when the unit commits: the unit's switch checks
/// for registrations instead, and [`DIRTY_UNLISTEN`] runs on its own when
/// there are), then diesel's connect-time settings again (`RESET ALL` would
/// otherwise leave the server's defaults).
pub const UNIT_RESET: &str = "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
     SET TIME ZONE 'UTC'; SET CLIENT_ENCODING TO 'UTF8'; CLOSE ALL; \
     DISCARD TEMP; DISCARD SEQUENCES; SELECT pg_catalog.pg_advisory_unlock_all(); ";

/// Sent, in a transaction of its own, when a transaction-scoped unit found
/// its session listening, or its transaction begun with characteristics
/// (isolation level, read only, deferrable) other than the defaults: an
/// earlier unit's `SET SESSION CHARACTERISTICS` applies at the next
/// `BEGIN`, before anything inside that transaction can reset it, and a
/// reset inside a unit that then fails is rolled back with it.
pub const DIRTY_UNLISTEN: &str = "UNLISTEN *; RESET default_transaction_isolation; \
     RESET default_transaction_read_only; RESET default_transaction_deferrable";

/// The schema of the entry [`keep_types_resolved_on`] keeps in diesel's
/// type cache to remember the path the cache was filled on. No schema name
/// can hold a NUL byte, so no real type's entry has it.
const TYPES_RESOLVED_ON: &str = "\0appschema: custom types resolved on";

/// Keeps diesel's cache of custom type OIDs on `conn` only while the
/// connection stays on the path `switch` sets (any text naming that path:
/// the checkout message, or the path itself); empties it when the path
/// changes.
///
/// Diesel caches a custom type's OID per connection by name and schema. A
/// type declared without a schema (`#[diesel(postgres_type(name =
/// "mood"))]`, one `mood` per tenant schema) is resolved through the path,
/// so once tenant A's `mood` is cached, tenant B's values would be bound as
/// `a.mood` on that connection and B's statements would fail. The cache
/// does not say which entries were resolved through the path, so all of
/// them go: types used after a change of tenant are looked up again, once
/// per connection and tenant (a query each). Client-side only: a hash look-up
/// when the path is the one the cache was filled on. Says whether the path
/// changed (or the connection is new), so the caller can forget the
/// connection's prepared statements too (see `types::on_path_change`).
pub(crate) fn keep_types_resolved_on(conn: &mut PgConnection, switch: &str) -> bool {
    let cache = conn.get_metadata_cache();
    let key = PgMetadataCacheKey::new(
        Some(Cow::Borrowed(TYPES_RESOLVED_ON)),
        Cow::Borrowed(switch),
    );
    if cache.lookup_type(&key).is_none() {
        *cache = PgMetadataCache::new();
        cache.store_type(key, (0, 0));
        return true;
    }
    false
}

/// Diesel's connect-time settings (`PgConnection::establish` runs `SET TIME
/// ZONE 'UTC'` and `SET CLIENT_ENCODING TO 'UTF8'`), as `-c` start-up
/// options, so that `RESET ALL` returns to them.
const CONNECT_SETTINGS: &[(&str, &str)] = &[("TimeZone", "UTC"), ("client_encoding", "UTF8")];

/// Throws away notifications libpq has already received on `conn` (from
/// channels an earlier checkout listened to). Client-side only: a
/// non-blocking read of whatever the socket holds, no round trip.
pub(crate) fn drain_notifications(conn: &mut PgConnection) {
    for notification in conn.notifications_iter() {
        if notification.is_err() {
            // A dead connection: the next query reports it.
            break;
        }
    }
}

/// `url` with start-up options that make the session's *defaults* (what
/// `RESET ALL` returns to) diesel's connect-time settings and
/// `search_path` = `default_path`: so a `RESET ALL` run by user code in
/// the middle of a checkout falls back to the shared-only path, never to
/// `"$user", public` (which would resolve a schema named like the login
/// role).
///
/// Works on both forms libpq accepts: a URI (`postgres://…?options=…`) and
/// a keyword/value string (`host=… options='…'`); options already present
/// are kept, ours appended (later `-c` win). A proxy that drops start-up
/// options (PgBouncer's `ignore_startup_parameters = options`) loses them:
/// the pool checks on connect whether they took effect and falls back to
/// re-applying diesel's settings on every checkout.
pub fn with_startup_options(url: &str, default_path: &str) -> String {
    let mut ours = String::new();
    for (name, value) in CONNECT_SETTINGS
        .iter()
        .copied()
        .chain([("search_path", default_path)])
    {
        if !ours.is_empty() {
            ours.push(' ');
        }
        ours.push_str("-c ");
        push_option_escaped(&mut ours, &format!("{name}={value}"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        with_uri_option(url, &ours)
    } else {
        with_keyword_option(url, &ours)
    }
}

/// Escapes `s` for libpq's `options` (split on whitespace; a backslash
/// makes the next character literal).
fn push_option_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_whitespace() || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

fn with_uri_option(url: &str, ours: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut params: Vec<String> = Vec::new();
    let mut options = String::new();
    for param in query.into_iter().flat_map(|q| q.split('&')) {
        match param.split_once('=') {
            Some(("options", value)) => {
                options = percent_decode(value);
            }
            _ if param.is_empty() => {}
            _ => params.push(param.to_string()),
        }
    }
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(ours);
    params.push(format!("options={}", percent_encode(&options)));
    format!("{base}?{}", params.join("&"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `keyword = value` pair of a libpq keyword/value string: the byte
/// range it spans and its (unquoted) value.
struct Pair {
    span: std::ops::Range<usize>,
    keyword: String,
    value: String,
}

/// Splits a keyword/value connection string the way libpq does: values are
/// bare (up to whitespace) or single-quoted, with `\` escaping the next
/// character in both. `None` when it does not parse (libpq will report it).
fn keyword_pairs(s: &str) -> Option<Vec<Pair>> {
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(s.len(), |&(o, _)| o);
    let mut pairs = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if at(i).is_none() {
            return Some(pairs);
        }
        let start = i;
        let mut keyword = String::new();
        while let Some(c) = at(i).filter(|c| *c != '=' && !c.is_whitespace()) {
            keyword.push(c);
            i += 1;
        }
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        if at(i) != Some('=') {
            return None;
        }
        i += 1;
        while at(i).is_some_and(char::is_whitespace) {
            i += 1;
        }
        let mut value = String::new();
        if at(i) == Some('\'') {
            i += 1;
            loop {
                match at(i)? {
                    '\\' => {
                        value.push(at(i + 1)?);
                        i += 2;
                    }
                    '\'' => {
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while let Some(c) = at(i).filter(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(at(i + 1)?);
                    i += 2;
                } else {
                    value.push(c);
                    i += 1;
                }
            }
        }
        pairs.push(Pair {
            span: offset(start)..offset(i),
            keyword,
            value,
        });
    }
}

fn with_keyword_option(url: &str, ours: &str) -> String {
    let Some(pairs) = keyword_pairs(url) else {
        return url.to_string();
    };
    let mut out = url.to_string();
    let mut options = String::new();
    // Remove every `options` pair (the last wins in libpq), back to front so
    // the spans stay valid, keeping the value of the last.
    for pair in pairs.iter().rev().filter(|p| p.keyword == "options") {
        if options.is_empty() {
            options.clone_from(&pair.value);
        }
        out.replace_range(pair.span.clone(), "");
    }
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str(ours);
    let quoted: String = options
        .chars()
        .flat_map(|c| match c {
            '\'' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let trimmed = out.trim_end();
    if trimmed.is_empty() {
        format!("options='{quoted}'")
    } else {
        format!("{trimmed} options='{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = r#"-c TimeZone=UTC -c client_encoding=UTF8 -c search_path="public",\ "ext""#;

    #[test]
    fn a_uri_gains_an_options_parameter() {
        assert_eq!(
            with_startup_options("postgres:///app", r#""public", "ext""#),
            format!("postgres:///app?options={}", percent_encode(OURS))
        );
        let url = with_startup_options(
            "postgresql://u@h:5/db?sslmode=disable",
            r#""public", "ext""#,
        );
        assert!(url.starts_with("postgresql://u@h:5/db?sslmode=disable&options="));
        assert_eq!(percent_decode(url.rsplit_once("options=").unwrap().1), OURS);
    }

    #[test]
    fn options_already_in_a_uri_are_kept_before_ours() {
        let url = with_startup_options(
            "postgres:///app?options=-c%20work_mem%3D64MB&host=/tmp",
            r#""public", "ext""#,
        );
        assert!(
            url.starts_with("postgres:///app?host=/tmp&options="),
            "{url}"
        );
        assert_eq!(
            percent_decode(url.rsplit_once("options=").unwrap().1),
            format!("-c work_mem=64MB {OURS}")
        );
    }

    #[test]
    fn a_keyword_value_string_gains_a_quoted_options_pair() {
        assert_eq!(
            with_startup_options("host=/tmp dbname=app", r#""public", "ext""#),
            format!(
                "host=/tmp dbname=app options='{}'",
                OURS.replace('\\', "\\\\")
            )
        );
        let url = with_startup_options(
            "host=/tmp options='-c work_mem=64MB' dbname = 'my app'",
            "\"public\"",
        );
        let pairs = keyword_pairs(&url).unwrap();
        let get = |k: &str| pairs.iter().find(|p| p.keyword == k).unwrap().value.clone();
        assert_eq!(get("dbname"), "my app");
        assert_eq!(get("host"), "/tmp");
        assert_eq!(
            get("options"),
            r#"-c work_mem=64MB -c TimeZone=UTC -c client_encoding=UTF8 -c search_path="public""#
        );
        assert_eq!(pairs.iter().filter(|p| p.keyword == "options").count(), 1);
    }

    #[test]
    fn percent_encoding_round_trips() {
        let s = "-c search_path=\"a b\",\\ 'é'%";
        assert_eq!(percent_decode(&percent_encode(s)), s);
    }
}
