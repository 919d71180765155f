//! How the async pools open connections and send cancel requests: in
//! plaintext, or over TLS as the URL's `sslmode` asks.
//!
//! tokio-postgres reads `sslmode` as `disable`, `prefer` or `require` only,
//! rejects libpq's `sslrootcert` (and `verify-ca`, `verify-full`), and
//! connects through whatever TLS connector it is handed; diesel-async
//! hands it none (`NoTls`). So the pools read those two settings from the
//! URL themselves ([`TlsUrl::split`]), pass tokio-postgres the rest, and
//! connect (and cancel) through a connector: the caller's
//! ([`AsyncSharedPoolBuilder::tls`](crate::AsyncSharedPoolBuilder::tls)),
//! else, with the `tls-rustls` feature, a rustls one set up from `sslmode`
//! and `sslrootcert` as libpq would verify. A URL that requires TLS the
//! pool cannot provide is refused when the pool is built, never connected
//! in plaintext.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use diesel::ConnectionResult;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{CancelToken, NoTls, Socket};

#[cfg(feature = "tls-rustls")]
mod rustls_connector;
#[cfg(feature = "tls-rustls")]
pub use rustls_connector::RustlsConnector;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    /// libpq's `allow` and `prefer` (and no `sslmode`): TLS if the server
    /// offers it (tokio-postgres has no plaintext-first `allow`), unverified
    /// unless a root certificate is at hand.
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "invalid sslmode `{other}` in the connection URL: use disable, allow, prefer, \
                     require, verify-ca or verify-full"
                ))
            }
        })
    }

    /// Whether the connection must be encrypted.
    fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }

    /// The value tokio-postgres reads: it only decides whether TLS is
    /// tried and required; the connector does the verifying.
    fn for_tokio_postgres(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        })
    }
}

/// A connection URL split into what tokio-postgres reads and the TLS
/// settings the pool applies itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsUrl {
    /// The URL without `sslrootcert`, its `sslmode` in tokio-postgres's
    /// words.
    pub(crate) url: String,
    pub(crate) mode: SslMode,
    /// `sslrootcert` as given: a PEM file, or `system`.
    pub(crate) root_cert: Option<String>,
}

impl TlsUrl {
    /// Reads `sslmode` and `sslrootcert` from `url`, a URI
    /// (`postgres://…?sslmode=…`) or a keyword/value string
    /// (`host=… sslmode=…`). Refuses libpq's other `ssl*` settings
    /// (client certificates, CRLs, protocol bounds), which tokio-postgres
    /// does not read either.
    pub(crate) fn split(url: &str) -> Result<TlsUrl, String> {
        let uri = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let params = if uri {
            uri_params(url)
        } else {
            keyword_params(url)?
        };
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut drop = Vec::new();
        for param in &params {
            match param.key.as_str() {
                "sslmode" => mode = SslMode::parse(&param.value)?,
                "sslrootcert" => root_cert = Some(param.value.clone()),
                "sslnegotiation" => continue,
                key if key.starts_with("ssl") => {
                    return Err(format!(
                        "`{key}` in the connection URL is not supported by the async pools: they \
                         read sslmode and sslrootcert; for client certificates or other TLS \
                         settings, configure a connector and pass it to the builder's `.tls(…)`, \
                         and remove `{key}` from the URL"
                    ))
                }
                _ => continue,
            }
            drop.push(param.span.clone());
        }
        let mut kept = String::with_capacity(url.len() + 16);
        let mut at = 0;
        for span in drop {
            kept.push_str(&url[at..span.start]);
            at = span.end;
        }
        kept.push_str(&url[at..]);
        let url = if uri {
            let (base, query) = kept.split_once('?').unwrap_or((&kept, ""));
            let mut query: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
            let sslmode = format!("sslmode={}", mode.for_tokio_postgres());
            query.push(&sslmode);
            format!("{base}?{}", query.join("&"))
        } else {
            format!("{} sslmode={}", kept.trim_end(), mode.for_tokio_postgres())
        };
        Ok(TlsUrl {
            url,
            mode,
            root_cert,
        })
    }
}

struct Param {
    key: String,
    value: String,
    /// Where the parameter stands in the URL.
    span: std::ops::Range<usize>,
}

fn uri_params(url: &str) -> Vec<Param> {
    let Some(start) = url.find('?').map(|i| i + 1) else {
        return Vec::new();
    };
    let mut params = Vec::new();
    let mut at = start;
    for raw in url[start..].split('&') {
        let end = at + raw.len();
        let (key, value) = raw.split_once('=').unwrap_or((raw, ""));
        // Without its `&`: the empty pieces a removal leaves are dropped
        // when the query is put back together.
        let span = at..end;
        params.push(Param {
            key: percent_decode(key),
            value: percent_decode(value),
            span,
        });
        at = end + 1;
    }
    params
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's keyword/value syntax: `key = value` pairs separated by
/// whitespace; a value may be single-quoted; a backslash escapes the next
/// character.
fn keyword_params(s: &str) -> Result<Vec<Param>, String> {
    let mut params = Vec::new();
    let mut chars = s.char_indices().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_ws(&mut chars);
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!(
                "cannot read the connection string: `=` expected after `{key}`"
            ));
        }
        skip_ws(&mut chars);
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => {
                        return Err(format!(
                        "cannot read the connection string: unterminated quoted value of `{key}`"
                    ))
                    }
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        // With the whitespace after it, so a removal leaves one separator.
        skip_ws(&mut chars);
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        params.push(Param {
            key,
            value,
            span: start..end,
        });
    }
    Ok(params)
}

/// How a pool's connections are opened and its cancel requests sent.
#[derive(Clone)]
pub(crate) struct Connect {
    mode: SslMode,
    connector: Option<Arc<dyn ErasedConnector>>,
}

impl fmt::Debug for Connect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("sslmode", &self.mode)
            .field("tls", &self.connector.is_some())
            .finish()
    }
}

/// A connector given to a builder's `.tls(…)`: any tokio-postgres TLS
/// connector.
#[derive(Clone)]
pub(crate) struct UserConnector(Arc<dyn ErasedConnector>);

impl fmt::Debug for UserConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserConnector")
    }
}

impl UserConnector {
    pub(crate) fn new<T>(connector: T) -> UserConnector
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        UserConnector(Arc::new(Erased(connector)))
    }
}

impl Connect {
    /// Splits `url` and picks the connector: `user`'s if given, else the
    /// built-in rustls one (feature `tls-rustls`) unless `sslmode=disable`.
    /// Returns the URL to hand tokio-postgres.
    pub(crate) fn resolve(
        url: &str,
        user: Option<&UserConnector>,
    ) -> Result<(String, Connect), String> {
        Self::resolve_with(url, user, builtin)
    }

    /// [`Connect::resolve`] with the built-in connector made by `builtin`.
    fn resolve_with(
        url: &str,
        user: Option<&UserConnector>,
        builtin: impl FnOnce(&TlsUrl) -> Result<Option<Arc<dyn ErasedConnector>>, String>,
    ) -> Result<(String, Connect), String> {
        let split = TlsUrl::split(url)?;
        let connector = match user {
            // The caller's connector verifies as it was configured;
            // `sslmode` still decides whether TLS is used and required.
            Some(user) if split.mode != SslMode::Disable => Some(Arc::clone(&user.0)),
            _ if split.mode == SslMode::Disable => None,
            _ => builtin(&split)?,
        };
        if split.mode.requires_tls() && connector.is_none() {
            return Err(format!(
                "sslmode={} in the connection URL requires TLS, and this async pool has no TLS \
                 connector: enable the `tls-rustls` feature of appschema (or appschema-async), or \
                 pass a connector to the builder's `.tls(…)`; the pool never connects in \
                 plaintext when TLS is required",
                split.mode
            ));
        }
        Ok((
            split.url,
            Connect {
                mode: split.mode,
                connector,
            },
        ))
    }

    /// Opens a connection to `url` (as returned by [`Connect::resolve`]).
    pub(crate) async fn establish(&self, url: &str) -> ConnectionResult<AsyncPgConnection> {
        let Some(connector) = &self.connector else {
            return AsyncPgConnection::establish(url).await;
        };
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| diesel::ConnectionError::InvalidConnectionUrl(with_causes(&e)))?;
        let hosts = config.get_hosts();
        let unix_only = !hosts.is_empty()
            && hosts
                .iter()
                .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        if self.mode == SslMode::Prefer && unix_only {
            // No TLS on a unix socket (the server says no, as libpq never
            // asks): skip the round trip of asking.
            return AsyncPgConnection::establish(url).await;
        }
        connector
            .connect(config)
            .await
            .map_err(|message| diesel::ConnectionError::BadConnection(self.hint(message)))
    }

    /// Asks the server to cancel what `token`'s connection runs, over the
    /// same TLS as the connection. Best effort: errors are ignored (a
    /// statement that already ended ignores it anyway).
    pub(crate) fn cancel(&self, token: CancelToken) -> BoxFuture<'static, ()> {
        match &self.connector {
            Some(connector) => connector.cancel(token),
            None => async move {
                let _ = token.cancel_query(NoTls).await;
            }
            .boxed(),
        }
    }

    fn hint(&self, message: String) -> String {
        if self.mode.requires_tls() && message.contains("server does not support TLS") {
            format!(
                "{message} (sslmode={} requires TLS: turn `ssl = on` on the server, or lower \
                 sslmode in the URL if plaintext is acceptable on this network)",
                self.mode
            )
        } else {
            message
        }
    }
}

#[cfg(feature = "tls-rustls")]
fn builtin(split: &TlsUrl) -> Result<Option<Arc<dyn ErasedConnector>>, String> {
    let connector = RustlsConnector::for_url(split.mode, split.root_cert.as_deref())?;
    Ok(Some(Arc::new(Erased(connector))))
}

#[cfg(not(feature = "tls-rustls"))]
fn builtin(_: &TlsUrl) -> Result<Option<Arc<dyn ErasedConnector>>, String> {
    Ok(None)
}

/// A tokio-postgres connector behind one type, for connecting and
/// cancelling.
trait ErasedConnector: Send + Sync {
    fn connect(
        &self,
        config: tokio_postgres::Config,
    ) -> BoxFuture<'static, Result<AsyncPgConnection, String>>;
    fn cancel(&self, token: CancelToken) -> BoxFuture<'static, ()>;
}

struct Erased<T>(T);

impl<T> ErasedConnector for Erased<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(
        &self,
        config: tokio_postgres::Config,
    ) -> BoxFuture<'static, Result<AsyncPgConnection, String>> {
        let tls = self.0.clone();
        async move {
            let (client, connection) = config.connect(tls).await.map_err(|e| with_causes(&e))?;
            AsyncPgConnection::try_from_client_and_connection(client, connection)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn cancel(&self, token: CancelToken) -> BoxFuture<'static, ()> {
        let tls = self.0.clone();
        async move {
            let _ = token.cancel_query(tls).await;
        }
        .boxed()
    }
}

/// `error` and its causes: tokio-postgres's own message names only the
/// step that failed ("error performing TLS handshake"), its cause says why.
fn with_causes(error: &dyn StdError) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        message.push_str(": ");
        message.push_str(&e.to_string());
        cause = e.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> TlsUrl {
        TlsUrl::split(url).unwrap()
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_from_a_uri_and_the_rest_kept() {
        let s = split("postgres://u@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&options=-c%20x%3D1");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            s.url,
            "postgres://u@db:5432/app?options=-c%20x%3D1&sslmode=require"
        );
        let s = split("postgres://u@db/app?options=x&sslrootcert=system");
        assert_eq!(s.mode, SslMode::Prefer);
        assert_eq!(s.url, "postgres://u@db/app?options=x&sslmode=prefer");
        let s = split("postgresql://db/app");
        assert_eq!(s.url, "postgresql://db/app?sslmode=prefer");
        let s = split("postgres://db/app?sslmode=disable");
        assert_eq!(
            (s.mode, s.url.as_str()),
            (SslMode::Disable, "postgres://db/app?sslmode=disable")
        );
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_from_a_keyword_string() {
        let s =
            split("host=db sslmode = verify-ca sslrootcert='/my certs/ca.pem' options='-c a\\'b'");
        assert_eq!(s.mode, SslMode::VerifyCa);
        assert_eq!(s.root_cert.as_deref(), Some("/my certs/ca.pem"));
        assert_eq!(s.url, "host=db options='-c a\\'b' sslmode=require");
    }

    #[test]
    fn unknown_sslmodes_and_unsupported_ssl_settings_are_refused_by_name() {
        let e = TlsUrl::split("postgres://db/app?sslmode=verify").unwrap_err();
        assert!(e.contains("invalid sslmode `verify`"), "{e}");
        let e = TlsUrl::split("postgres://db/app?sslcert=/c.pem").unwrap_err();
        assert!(e.contains("`sslcert`") && e.contains(".tls("), "{e}");
    }

    #[test]
    fn a_required_tls_without_a_connector_is_refused_and_names_the_fix() {
        // What the build without `tls-rustls` has: no built-in connector.
        let none = |_: &TlsUrl| Ok(None);
        for mode in ["require", "verify-ca", "verify-full"] {
            let url = format!("postgres://db/app?sslmode={mode}&sslrootcert=/ca.pem");
            let e = Connect::resolve_with(&url, None, none).unwrap_err();
            assert!(
                e.contains(&format!("sslmode={mode}"))
                    && e.contains("tls-rustls")
                    && e.contains(".tls("),
                "{e}"
            );
        }
        for mode in ["disable", "prefer", "allow"] {
            let url = format!("postgres://db/app?sslmode={mode}");
            let (_, connect) = Connect::resolve_with(&url, None, none).unwrap();
            assert!(connect.connector.is_none());
        }
    }
}
