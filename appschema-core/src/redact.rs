//! Keeping database passwords out of logs: every `Debug`, `Display` and
//! printed message of appschema that shows a connection string shows it
//! through [`redact_url`], and every error that may echo one (libpq quotes
//! the bad part of a connection string it cannot parse) goes through
//! [`redact_secrets`].
//!
//! The password is found where libpq takes it from: the user information
//! of a `postgres://` / `postgresql://` URI (`user:password@host`), a
//! `password` query parameter, or a `password` keyword of a `key=value`
//! connection string (quoted or not).

/// What stands in for a password.
pub const REDACTED: &str = "***";

/// `url` (a `postgres://` URI or a libpq `key=value` string) with every
/// password replaced by `***`; everything else is kept, so the result
/// still says which server, database and user were meant.
///
/// ```
/// use appschema::redact_url;
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db:5432/app?sslmode=require"),
///     "postgres://app:***@db:5432/app?sslmode=require"
/// );
/// assert_eq!(redact_url("postgres://db/app?password=s3cret"), "postgres://db/app?password=***");
/// assert_eq!(redact_url("host=db password='s 3cret' dbname=app"), "host=db password=*** dbname=app");
/// ```
pub fn redact_url(url: &str) -> String {
    match uri_parts(url) {
        Some(parts) => {
            let mut out = String::with_capacity(url.len());
            out.push_str(&url[..parts.userinfo_start]);
            match parts.password {
                Some((start, end)) => {
                    out.push_str(&url[parts.userinfo_start..start]);
                    out.push_str(REDACTED);
                    out.push_str(&url[end..parts.rest_start]);
                }
                None => out.push_str(&url[parts.userinfo_start..parts.rest_start]),
            }
            out.push_str(&redact_query(&url[parts.rest_start..]));
            out
        }
        None => redact_keywords(url),
    }
}

/// `text` (an error message, say) with every password `url` holds
/// replaced by `***`, as given and percent-decoded: for messages that may
/// quote the connection string, whole or in part.
///
/// ```
/// use appschema::redact_secrets;
/// let url = "postgres://app:pw%zz@db/app";
/// let message = r#"invalid percent-encoded token: "pw%zz""#;
/// assert_eq!(redact_secrets(message, url), r#"invalid percent-encoded token: "***""#);
/// ```
pub fn redact_secrets(text: &str, url: &str) -> String {
    let mut secrets = passwords(url);
    // Longest first, so a password containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// A diesel connection error with every password of `url` it quotes
/// replaced (see [`redact_secrets`]).
pub fn redact_connection_error(
    error: diesel::ConnectionError,
    url: &str,
) -> diesel::ConnectionError {
    use diesel::ConnectionError as E;
    match error {
        E::BadConnection(m) => E::BadConnection(redact_secrets(&m, url)),
        E::InvalidConnectionUrl(m) => E::InvalidConnectionUrl(redact_secrets(&m, url)),
        other => other,
    }
}

/// Where the pieces of a URI are, by byte offset.
struct UriParts {
    /// Just after `scheme://`.
    userinfo_start: usize,
    /// The password's range within the user information, if any.
    password: Option<(usize, usize)>,
    /// Just after the authority's `@` (or at the host when there is none).
    rest_start: usize,
}

/// `url` without its password, and the password as libpq would read it:
/// for a child process (`pg_dump`) that must not see the password on its
/// command line, where `ps` shows it to every user of the machine. The
/// password then travels in the child's environment (`PGPASSWORD`), which
/// only its owner can read. `None` when `url` gives no password (or gives
/// one in a form this does not take apart: then `url` is returned whole).
pub(crate) fn split_password(url: &str) -> (String, Option<String>) {
    match uri_parts(url) {
        Some(parts) => {
            let mut password = None;
            let mut out = String::with_capacity(url.len());
            out.push_str(&url[..parts.userinfo_start]);
            match parts.password {
                Some((start, end)) => {
                    password = Some(percent_decode(&url[start..end]));
                    // `user:` without the colon.
                    out.push_str(&url[parts.userinfo_start..start - 1]);
                    out.push_str(&url[end..parts.rest_start]);
                }
                None => out.push_str(&url[parts.userinfo_start..parts.rest_start]),
            }
            let rest = &url[parts.rest_start..];
            match rest.split_once('?') {
                Some((head, query)) => {
                    let kept: Vec<&str> = query
                        .split('&')
                        .filter(|param| match param.split_once('=') {
                            Some((k, v)) if is_password_key(k) => {
                                password = Some(percent_decode(v));
                                false
                            }
                            _ => true,
                        })
                        .collect();
                    out.push_str(head);
                    if !kept.is_empty() {
                        out.push('?');
                        out.push_str(&kept.join("&"));
                    }
                }
                None => out.push_str(rest),
            }
            (out, password)
        }
        None => {
            let mut password = None;
            let mut out = String::with_capacity(url.len());
            let mut last = 0;
            for (key, value_start, value_end) in keyword_values(url) {
                if key.eq_ignore_ascii_case("password") {
                    let value = &url[value_start..value_end];
                    let unquoted = match value.strip_prefix('\'') {
                        Some(v) => v.strip_suffix('\'').unwrap_or(v).to_string(),
                        None => value.to_string(),
                    };
                    password = Some(unquoted.replace("\\'", "'").replace("\\\\", "\\"));
                    // Drop `password = value`: back from the value over
                    // spaces, `=`, spaces and the key.
                    let head = url[..value_start].trim_end();
                    let head = head.strip_suffix('=').unwrap_or(head).trim_end();
                    let key_start = head.len() - key.len();
                    out.push_str(&url[last..key_start]);
                    last = value_end;
                }
            }
            out.push_str(&url[last..]);
            (out.trim().to_string(), password)
        }
    }
}

fn uri_parts(url: &str) -> Option<UriParts> {
    let start = ["postgresql://", "postgres://"]
        .iter()
        .find(|p| {
            url.get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
        })?
        .len();
    // libpq reads user information up to the first `@` or `/`.
    let after = &url[start..];
    let stop = after.find(['@', '/']).unwrap_or(after.len());
    if after.as_bytes().get(stop) != Some(&b'@') {
        return Some(UriParts {
            userinfo_start: start,
            password: None,
            rest_start: start,
        });
    }
    let userinfo = &after[..stop];
    let password = userinfo
        .find(':')
        .map(|colon| (start + colon + 1, start + stop));
    Some(UriParts {
        userinfo_start: start,
        password,
        rest_start: start + stop,
    })
}

/// The `password=` query parameters of the part of a URI after its user
/// information, replaced.
fn redact_query(rest: &str) -> String {
    let Some(q) = rest.find('?') else {
        return rest.to_string();
    };
    let (head, query) = rest.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((k, _)) if is_password_key(k) => format!("{k}={REDACTED}"),
            _ => param.to_string(),
        })
        .collect();
    format!("{head}{}", params.join("&"))
}

fn is_password_key(key: &str) -> bool {
    let key = percent_decode(key);
    key.trim().eq_ignore_ascii_case("password")
}

/// A `key=value` connection string with its `password` values replaced.
fn redact_keywords(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut last = 0;
    for (key, value_start, value_end) in keyword_values(conninfo) {
        if key.eq_ignore_ascii_case("password") {
            out.push_str(&conninfo[last..value_start]);
            out.push_str(REDACTED);
            last = value_end;
        }
    }
    out.push_str(&conninfo[last..]);
    out
}

/// Each `key = value` of a libpq connection string: the key, and the
/// byte range of its value (quotes included).
fn keyword_values(s: &str) -> Vec<(String, usize, usize)> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_space(i);
        if i >= bytes.len() {
            return out;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[key_start..i].to_string();
        i = skip_space(i);
        if bytes.get(i) != Some(&b'=') {
            // Not a connection string libpq accepts; keep scanning words.
            continue;
        }
        i = skip_space(i + 1);
        let value_start = i;
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i = i.min(bytes.len());
        }
        out.push((key, value_start, i));
    }
}

/// Every password `url` gives, as written and as libpq reads it.
fn passwords(url: &str) -> Vec<String> {
    let mut raw = Vec::new();
    match uri_parts(url) {
        Some(parts) => {
            if let Some((start, end)) = parts.password {
                raw.push(url[start..end].to_string());
            }
            let rest = &url[parts.rest_start..];
            if let Some((_, query)) = rest.split_once('?') {
                for param in query.split('&') {
                    if let Some((k, v)) = param.split_once('=') {
                        if is_password_key(k) {
                            raw.push(v.to_string());
                        }
                    }
                }
            }
        }
        None => {
            for (key, start, end) in keyword_values(url) {
                if key.eq_ignore_ascii_case("password") {
                    let value = &url[start..end];
                    raw.push(value.to_string());
                    let unquoted = value
                        .strip_prefix('\'')
                        .map(|v| v.strip_suffix('\'').unwrap_or(v))
                        .unwrap_or(value);
                    raw.push(unquoted.replace("\\'", "'").replace("\\\\", "\\"));
                }
            }
        }
    }
    let decoded: Vec<String> = raw.iter().map(|s| percent_decode(s)).collect();
    raw.extend(decoded);
    raw.sort();
    raw.dedup();
    raw
}

/// `%XX` sequences decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(bytes[i + 1]) * 16 + hex(bytes[i + 2]));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_split_off_every_form_of_connection_string() {
        for (url, rest, password) in [
            (
                "postgres://app:s3cret@db:5432/app?sslmode=require",
                "postgres://app@db:5432/app?sslmode=require",
                Some("s3cret"),
            ),
            (
                "postgresql://app:p%40ss@db/app",
                "postgresql://app@db/app",
                Some("p@ss"),
            ),
            (
                "postgres://db/app?password=s3cret",
                "postgres://db/app",
                Some("s3cret"),
            ),
            (
                "postgres://db/app?sslmode=require&password=s3cret&application_name=x",
                "postgres://db/app?sslmode=require&application_name=x",
                Some("s3cret"),
            ),
            ("postgres://app@db/app", "postgres://app@db/app", None),
            (
                "host=db password='s 3cret' dbname=app",
                "host=db  dbname=app",
                Some("s 3cret"),
            ),
            ("host=db password = s3cret", "host=db", Some("s3cret")),
            ("host=db dbname=app", "host=db dbname=app", None),
        ] {
            let (got_rest, got_password) = split_password(url);
            assert_eq!(got_rest, rest, "{url}");
            assert_eq!(got_password.as_deref(), password, "{url}");
        }
    }

    #[test]
    fn uri_passwords_are_replaced_and_the_rest_kept() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact_url("postgresql://app:s3cret@db1,db2/app"),
            "postgresql://app:***@db1,db2/app"
        );
        assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact_url("postgres:///app"), "postgres:///app");
        assert_eq!(
            redact_url("POSTGRES://u:p?w@h/d"),
            "POSTGRES://u:***@h/d",
            "libpq's user information runs to the first `@`, whatever it holds"
        );
    }

    #[test]
    fn query_string_passwords_are_replaced() {
        assert_eq!(
            redact_url("postgres://db/app?user=u&password=s3cret&sslmode=require"),
            "postgres://db/app?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u:a@db/app?pass%77ord=b"),
            "postgres://u:***@db/app?pass%77ord=***"
        );
    }

    #[test]
    fn keyword_passwords_are_replaced_quoted_or_not() {
        assert_eq!(
            redact_url("host=db password=s3cret dbname=app"),
            "host=db password=*** dbname=app"
        );
        assert_eq!(
            redact_url("host=db PASSWORD = 'it\\'s secret' dbname=app"),
            "host=db PASSWORD = *** dbname=app"
        );
        assert_eq!(redact_url("password=x"), "password=***");
    }

    #[test]
    fn any_text_is_taken_without_panicking() {
        for text in [
            "",
            "é",
            "ééééééééééééééé",
            "password",
            "password=",
            "a = 'b",
            "x\\",
        ] {
            let _ = redact_url(text);
            let _ = redact_secrets(text, text);
        }
        assert_eq!(
            redact_url("pässword=x password=y"),
            "pässword=x password=***"
        );
    }

    #[test]
    fn secrets_quoted_in_messages_are_replaced() {
        let url = "postgres://u:se%63ret@h/d";
        assert_eq!(
            redact_secrets("bad se%63ret or secret", url),
            "bad *** or ***"
        );
        let kv = "host=h password='a b'";
        assert_eq!(redact_secrets("saw \"a b\"", kv), "saw \"***\"");
        assert_eq!(
            redact_secrets("nothing here", "postgres://h/d"),
            "nothing here"
        );
    }
}
