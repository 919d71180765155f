//! Where a request names its tenant: the host (the default), a header, a
//! path prefix, or the application's own function of the request.

use std::fmt;
use std::sync::Arc;

use appschema_core::PublicName;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderName, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::HostSource;

/// Where [`TenantLayer`](crate::TenantLayer) takes each request's tenant
/// from. Whatever the source, the value is validated as a public name
/// (ASCII letters, digits, `.`, `-`, `_`; see [`PublicName`]) before any
/// look-up, looked up through the same [`Resolver`](appschema_core::resolve::Resolver)
/// and cache as a host (so a tenant's primary name and every alias work),
/// and refused the same way: `400` for a missing or malformed value, `404`
/// for a name no tenant answers to, `503` when the registry cannot be read.
///
/// ```
/// use appschema::axum::TenantSource;
/// use axum::http::HeaderName;
///
/// // `X-Tenant: acme` (only behind a proxy or gateway that sets it: any
/// // client can send any header).
/// let by_header = TenantSource::Header(HeaderName::from_static("x-tenant"));
/// // `/t/acme/api/projects?page=2` reaches the inner router as `/api/projects?page=2`.
/// let by_path = TenantSource::path_prefix("/t");
/// // A claim of a token an earlier layer verified and put in the extensions.
/// #[derive(Clone)]
/// struct Claims { tenant: String }
/// let by_claim = TenantSource::custom(|parts| {
///     parts.extensions.get::<Claims>().map(|c| c.tenant.clone())
/// });
/// # let _ = (by_header, by_path, by_claim);
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TenantSource {
    /// The request's host, read as [`TenantLayer::host_source`](crate::TenantLayer::host_source)
    /// says (default: the `Host` header), normalized by
    /// [`normalize_host`](appschema_core::resolve::normalize_host). The default.
    #[default]
    Host,
    /// The value of this header. Exactly one such header is required (two
    /// are refused, as two `Host` headers are). Any client can send any
    /// header: use it only behind a proxy or gateway that sets it.
    Header(HeaderName),
    /// The first path segment after this prefix (see
    /// [`TenantSource::path_prefix`]): `/t/acme/api/x?q=1` names tenant
    /// `acme`, and the inner router sees `/api/x?q=1` (the URI as it arrived
    /// is in the request's extensions as [`PrefixedUri`], to build links
    /// with). A path outside the prefix gets
    /// `404`; the prefix with no tenant segment, `400`.
    PathPrefix(String),
    /// The application's own function of the request head, e.g. reading a
    /// claim of a token an earlier layer verified. `None` means the request
    /// names no tenant (`400`).
    Custom(CustomSource),
}

/// The URI a request arrived with, tenant path prefix included, put in the
/// request's extensions by [`TenantSource::PathPrefix`] (which hands the
/// inner router the path without it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixedUri(pub Uri);

/// The function of [`TenantSource::Custom`].
pub type CustomSource = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

impl TenantSource {
    /// [`TenantSource::PathPrefix`] with `prefix` (`"/t"`; a trailing `/` is
    /// ignored, `"/"` makes the first segment of every path the tenant).
    ///
    /// # Panics
    /// When `prefix` does not start with `/` or holds `?` or `#`: a
    /// configuration mistake, found at start-up.
    pub fn path_prefix(prefix: &str) -> TenantSource {
        assert!(
            prefix.starts_with('/') && !prefix.contains(['?', '#']),
            "a tenant path prefix starts with `/` and holds no `?` or `#`: got {prefix:?}"
        );
        TenantSource::PathPrefix(prefix.trim_end_matches('/').to_string())
    }

    /// [`TenantSource::Custom`] over `f`.
    pub fn custom(f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static) -> TenantSource {
        TenantSource::Custom(Arc::new(f))
    }
}

impl fmt::Debug for TenantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TenantSource::Host => f.write_str("Host"),
            TenantSource::Header(name) => f.debug_tuple("Header").field(name).finish(),
            TenantSource::PathPrefix(prefix) => f.debug_tuple("PathPrefix").field(prefix).finish(),
            TenantSource::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// What to look up for a request.
pub(crate) enum Lookup {
    /// A raw host, normalized by the resolver.
    Host(String),
    /// A validated public name.
    Name(PublicName),
}

/// Why a request names no tenant: the status and body to answer with.
pub(crate) struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, message.into())
}

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn header_value(req: &Request, name: &HeaderName) -> Option<String> {
    req.headers().get(name).map(|v| {
        v.to_str()
            .map(str::to_owned)
            .unwrap_or_else(|_| "\u{fffd}".into())
    })
}

pub(crate) fn request_host(req: &Request, source: HostSource) -> Option<String> {
    let forwarded = match source {
        HostSource::XForwardedHost => header_value(req, &X_FORWARDED_HOST),
        HostSource::Host => None,
    };
    forwarded
        .or_else(|| header_value(req, &header::HOST))
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))
}

fn public_name(value: &str, what: &str) -> Result<Lookup, Refusal> {
    PublicName::new(value)
        .map(Lookup::Name)
        .map_err(|e| bad_request(format!("malformed tenant {what}: {e}\n")))
}

/// What `req` names as its tenant by `source`, or the refusal to answer
/// with; a path prefix is removed from `req`'s URI.
pub(crate) fn extract(
    req: &mut Request,
    source: &TenantSource,
    host_source: HostSource,
) -> Result<Lookup, Refusal> {
    match source {
        TenantSource::Host => {
            // Two Host headers: proxies and this layer could disagree on
            // which one counts, so the request names no tenant reliably.
            let ambiguous = [header::HOST, X_FORWARDED_HOST]
                .iter()
                .any(|name| req.headers().get_all(name).iter().nth(1).is_some());
            if ambiguous {
                return Err(bad_request("more than one Host header\n"));
            }
            request_host(req, host_source)
                .map(Lookup::Host)
                .ok_or_else(|| bad_request("missing Host header\n"))
        }
        TenantSource::Header(name) => {
            let mut values = req.headers().get_all(name).iter();
            let (Some(value), None) = (values.next(), values.next()) else {
                return Err(bad_request(format!(
                    "exactly one `{name}` header naming the tenant is required\n"
                )));
            };
            let value = value
                .to_str()
                .map_err(|_| bad_request(format!("the `{name}` header is not ASCII text\n")))?;
            public_name(value, &format!("in header `{name}`"))
        }
        TenantSource::PathPrefix(prefix) => {
            let path = req.uri().path();
            let Some(rest) = path
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            else {
                return Err(Refusal(
                    StatusCode::NOT_FOUND,
                    "no tenant in this path\n".into(),
                ));
            };
            let (segment, inner_path) = match rest.find('/') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, "/"),
            };
            if segment.is_empty() {
                return Err(bad_request(format!(
                    "the path names no tenant: use `{prefix}/<tenant>/…`\n"
                )));
            }
            let lookup = public_name(segment, "in the path")?;
            let rewritten = match req.uri().query() {
                Some(query) => format!("{inner_path}?{query}"),
                None => inner_path.to_string(),
            };
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(
                PathAndQuery::try_from(rewritten)
                    .map_err(|e| bad_request(format!("malformed path: {e}\n")))?,
            );
            let uri =
                Uri::from_parts(parts).map_err(|e| bad_request(format!("malformed URI: {e}\n")))?;
            let original = std::mem::replace(req.uri_mut(), uri);
            req.extensions_mut().insert(PrefixedUri(original));
            Ok(lookup)
        }
        TenantSource::Custom(f) => {
            let (parts, body) = std::mem::take(req).into_parts();
            let named = f(&parts);
            *req = Request::from_parts(parts, body);
            match named {
                Some(value) => public_name(&value, "named by the request"),
                None => Err(bad_request("the request names no tenant\n")),
            }
        }
    }
}
