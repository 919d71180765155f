//! tower/axum integration of appschema: every request is routed to its
//! tenant (by host name, or a header, a path prefix, or a function of the
//! request: see [`TenantSource`]) before a handler runs.
//!
//! [`TenantLayer`] resolves the request's host through a [`Resolver`] and
//! puts the [`CurrentTenant`] in the request's extensions; unknown hosts get `404`,
//! malformed ones `400`, and a registry that cannot be read `503` (with
//! `Retry-After`), before any handler runs, so no handler ever runs without
//! a tenant (and never on the shared schema by accident). Handlers take [`CurrentTenant`] as an extractor
//! and run their diesel work with [`CurrentTenant::run`] (or
//! [`run_for_tenant`]): on a connection checked out of a
//! [`SharedPool`](appschema_core::SharedPool) on the tenant's `search_path`,
//! on tokio's blocking threads. With the `async` feature, handlers on
//! diesel-async take a connection of an `AsyncSharedPool` instead
//! (`CurrentTenant::conn`, the `TenantConn` extractor), with no blocking
//! thread involved.
//!
//! ```no_run
//! use std::sync::Arc;
//! use appschema::axum::{CurrentTenant, TenantLayer};
//! use appschema::resolve::Resolver;
//! use axum::{routing::get, Router};
//! use diesel::r2d2::{ConnectionManager, Pool};
//!
//! async fn whoami(CurrentTenant(tenant): CurrentTenant) -> String {
//!     format!("you are {} (schema {})", tenant.public_name, tenant.schema_name)
//! }
//!
//! # async fn run() {
//! let pool = Pool::new(ConnectionManager::<diesel::PgConnection>::new("postgres:///app")).unwrap();
//! let resolver = Arc::new(Resolver::builder().build(pool));
//! let app: Router = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(TenantLayer::new(resolver));
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apex;
mod db;
#[cfg(feature = "async")]
mod db_async;
mod source;

pub use apex::apex_or_tenants;
pub use db::{run_for_tenant, TenantDbError, RETRY_AFTER_SECONDS};
#[cfg(feature = "async")]
pub use db_async::TenantConn;
pub use source::{CustomSource, PrefixedUri, TenantSource};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use appschema_core::registry::Tenant;
use appschema_core::resolve::{ResolveError, Resolver};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The tenant the request's host resolved to, put in the request's
/// extensions by [`TenantLayer`] and taken by handlers as an extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentTenant(pub Tenant);

impl<S: Send + Sync> FromRequestParts<S> for CurrentTenant {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<CurrentTenant>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "no tenant on this request: add appschema_axum::TenantLayer to the router",
        ))
    }
}

/// Which header names the host. The choice is the application's, and so is
/// the risk: see [`HostSource::XForwardedHost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HostSource {
    /// The `Host` header (or the HTTP/2 `:authority`): what the client
    /// connected to. The default, and the right choice without a proxy.
    #[default]
    Host,
    /// `X-Forwarded-Host`, falling back to `Host`. Any client that reaches
    /// the application directly can set it to any tenant's name; use it only
    /// when every request passes through a proxy that overwrites it.
    XForwardedHost,
}

/// The tower layer resolving each request's tenant.
#[derive(Debug, Clone)]
pub struct TenantLayer {
    resolver: Arc<Resolver>,
    source: HostSource,
    tenant_source: TenantSource,
}

impl TenantLayer {
    /// Resolves tenants from the `Host` header with `resolver`.
    pub fn new(resolver: Arc<Resolver>) -> TenantLayer {
        TenantLayer {
            resolver,
            source: HostSource::Host,
            tenant_source: TenantSource::Host,
        }
    }

    /// Takes the tenant from `source` instead of the host (default
    /// [`TenantSource::Host`]).
    ///
    /// With [`TenantSource::PathPrefix`], put the layer *around* the router
    /// ([`TenantLayer::wrap`]), not on it with `Router::layer`: axum runs a
    /// router's layers after routing, so the inner router would route the
    /// path with its prefix still on.
    pub fn tenant_source(mut self, source: TenantSource) -> TenantLayer {
        self.tenant_source = source;
        self
    }

    /// `router` behind this layer, the layer running before routing (which
    /// a [`TenantSource::PathPrefix`] needs, since it rewrites the path).
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// use appschema::axum::{CurrentTenant, TenantLayer, TenantSource};
    /// use axum::{routing::get, Router};
    /// # fn run(resolver: Arc<appschema::resolve::Resolver>) {
    /// let routes = Router::new().route(
    ///     "/projects",
    ///     get(|CurrentTenant(t): CurrentTenant| async move { t.public_name }),
    /// );
    /// // GET /t/acme/projects runs the `/projects` handler for tenant `acme`.
    /// let app: Router = TenantLayer::new(resolver)
    ///     .tenant_source(TenantSource::path_prefix("/t"))
    ///     .wrap(routes);
    /// # }
    /// ```
    pub fn wrap(self, router: axum::Router) -> axum::Router {
        axum::Router::new().fallback_service(tower_layer::Layer::layer(&self, router))
    }

    /// Reads the host from `source` instead (default [`HostSource::Host`]).
    pub fn host_source(mut self, source: HostSource) -> TenantLayer {
        self.source = source;
        self
    }
}

impl<S> tower_layer::Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            inner,
            resolver: self.resolver.clone(),
            source: self.source,
            tenant_source: self.tenant_source.clone(),
        }
    }
}

/// The service [`TenantLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct TenantService<S> {
    inner: S,
    resolver: Arc<Resolver>,
    source: HostSource,
    tenant_source: TenantSource,
}

/// Resolves `host`, querying the registry off the async worker threads when
/// the answer is not cached.
async fn resolve(
    resolver: &Arc<Resolver>,
    lookup: source::Lookup,
) -> Result<Option<Tenant>, ResolveError> {
    let cached = match &lookup {
        source::Lookup::Host(host) => resolver.resolve_cached(host),
        source::Lookup::Name(name) => resolver.resolve_name_cached(name).map(Ok),
    };
    if let Some(answer) = cached {
        return answer;
    }
    let resolver = resolver.clone();
    let blocking = tokio::task::spawn_blocking(move || match lookup {
        source::Lookup::Host(host) => resolver.resolve(&host),
        source::Lookup::Name(name) => resolver.resolve_name(&name),
    });
    match blocking.await {
        Ok(answer) => answer,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}

fn refusal(error: &ResolveError) -> Response {
    match error {
        ResolveError::MalformedHost { .. } => {
            (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response()
        }
        _ => db::unavailable("tenant registry unavailable\n"),
    }
}

impl<S> tower_service::Service<Request> for TenantService<S>
where
    S: tower_service::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The clone is not ready; the service poll_ready readied is.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let resolver = self.resolver.clone();
        let lookup = source::extract(&mut req, &self.tenant_source, self.source);
        Box::pin(async move {
            let lookup = match lookup {
                Ok(lookup) => lookup,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            match resolve(&resolver, lookup).await {
                Ok(Some(tenant)) => {
                    req.extensions_mut().insert(CurrentTenant(tenant));
                    inner.call(req).await
                }
                Ok(None) => Ok((StatusCode::NOT_FOUND, "no such tenant\n").into_response()),
                Err(e) => Ok(refusal(&e)),
            }
        })
    }
}
