//! One router for the site itself (the apex host: landing page, sign-up)
//! and for every tenant's host.

use std::collections::HashSet;

use appschema_core::resolve::{normalize_host, ResolveError};
use appschema_core::PublicName;
use axum::extract::Request;
use axum::Router;
use tower::ServiceExt;

use crate::source::request_host;
use crate::HostSource;

/// Routes requests to the apex hosts (`example.com`, the site itself:
/// landing page, sign-up, shared API) to `apex`, and every other request to
/// `tenants` (the routes behind a [`TenantLayer`](crate::TenantLayer), which
/// answers `404` for hosts that name no tenant and `400` for malformed or
/// missing ones). The host is read as `host_source` says, normalized as the
/// resolver does (case, port and a trailing dot do not matter), so the
/// split agrees with the tenant layer's view of the same request.
///
/// Refused: an apex host that is not a valid host name.
///
/// ```no_run
/// use std::sync::Arc;
/// use appschema::axum::{apex_or_tenants, CurrentTenant, HostSource, TenantLayer};
/// use appschema::resolve::Resolver;
/// use axum::{routing::{get, post}, Router};
///
/// # fn run(resolver: Arc<Resolver>) -> Result<(), appschema::resolve::ResolveError> {
/// let apex = Router::new()
///     .route("/", get(|| async { "welcome: sign up at POST /signup" }))
///     .route("/signup", post(|| async { "created" }));
/// let tenants = Router::new()
///     .route("/", get(|CurrentTenant(t): CurrentTenant| async move { t.public_name }))
///     .layer(TenantLayer::new(resolver));
/// let app: Router = apex_or_tenants(["example.com", "www.example.com"], HostSource::Host, apex, tenants)?;
/// # Ok(())
/// # }
/// ```
pub fn apex_or_tenants<I, H>(
    apex_hosts: I,
    host_source: HostSource,
    apex: Router,
    tenants: Router,
) -> Result<Router, ResolveError>
where
    I: IntoIterator<Item = H>,
    H: AsRef<str>,
{
    let apex_hosts: HashSet<PublicName> = apex_hosts
        .into_iter()
        .map(|host| normalize_host(host.as_ref()))
        .collect::<Result<_, _>>()?;
    Ok(
        Router::new().fallback_service(tower::service_fn(move |req: Request| {
            // Two Host headers name no host reliably: the tenant layer
            // refuses them.
            let single = req
                .headers()
                .get_all(axum::http::header::HOST)
                .iter()
                .nth(1)
                .is_none();
            let to_apex = single
                && request_host(&req, host_source)
                    .and_then(|host| normalize_host(&host).ok())
                    .is_some_and(|name| apex_hosts.contains(&name));
            let target = if to_apex {
                apex.clone()
            } else {
                tenants.clone()
            };
            target.oneshot(req)
        })),
    )
}
