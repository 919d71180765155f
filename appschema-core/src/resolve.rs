//! Routing requests to tenants: host name → tenant, through the registry.
//!
//! [`normalize_host`] turns a `Host` header into a [`PublicName`] (lower case,
//! port and trailing dot stripped, anything odd refused); a [`Resolver`] looks
//! that name up in the registry and caches the answer with a bound and a time
//! to live. Unknown hosts resolve to `None`: never to the shared schema, and
//! to a default tenant only if the application configured one.
//!
//! Which header to trust is the application's choice: `Host` is what the
//! client connected to; `X-Forwarded-Host` is set by a reverse proxy and can be
//! forged by any client that reaches the application directly. Only read it
//! when every request passes through a proxy that overwrites it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::PgConnection;

use crate::name::{NameError, PublicName, MAX_PUBLIC_NAME_BYTES};
use crate::registry::{self, Tenant};

/// Bumped whenever a tenant is created, renamed or dropped through the
/// library; every [`Resolver`] in the process empties its cache when it sees
/// a new value. Other processes rely on the time to live.
static REGISTRY_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Tells every [`Resolver`] in this process that the registry changed. The
/// provisioning functions call it after each commit; call it yourself after
/// editing `appschema_tenants` or `appschema_public_names` by hand.
pub fn invalidate_all() {
    REGISTRY_GENERATION.fetch_add(1, Ordering::SeqCst);
}

fn generation() -> u64 {
    REGISTRY_GENERATION.load(Ordering::SeqCst)
}

/// Why a host could not be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The host header is not a host name appschema accepts (answer 400).
    #[error("malformed host {host:?}: {reason}")]
    MalformedHost {
        /// The header value, shortened to 100 characters.
        host: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry could not be read (answer 503).
    #[error("cannot read the tenant registry to resolve {host:?}: {error}")]
    Registry {
        /// The normalized host.
        host: String,
        /// The underlying error (printed in the message, so not also
        /// returned as `source()`: a printed chain would repeat it).
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Normalizes a `Host` header value into the public name to look up: lower
/// case, `:port` and one trailing dot stripped. Refused: user info
/// (`evil.com@acme.localhost`), IPv6 literals, empty or over-long hosts,
/// anything outside ASCII letters, digits, `.`, `-`, `_` (international names
/// must arrive in punycode, as browsers send them).
///
/// ```
/// use appschema::resolve::normalize_host;
/// assert_eq!(normalize_host("ACME.localhost:8080").unwrap().as_str(), "acme.localhost");
/// assert_eq!(normalize_host("acme.localhost.").unwrap().as_str(), "acme.localhost");
/// assert!(normalize_host("evil.com@acme.localhost").is_err());
/// assert!(normalize_host("аcme.localhost").is_err()); // Cyrillic `а`
/// ```
pub fn normalize_host(raw: &str) -> Result<PublicName, ResolveError> {
    let malformed = |reason: String| ResolveError::MalformedHost {
        host: raw.chars().take(100).collect(),
        reason,
    };
    if raw.len() > MAX_PUBLIC_NAME_BYTES + 7 {
        return Err(malformed(format!(
            "{} bytes long, a host name has at most {MAX_PUBLIC_NAME_BYTES}",
            raw.len()
        )));
    }
    if raw.starts_with('[') {
        return Err(malformed("IP literals do not name tenants".into()));
    }
    if raw.contains('@') {
        return Err(malformed(
            "user information (`…@`) is not part of a host".into(),
        ));
    }
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        Some(_) => return Err(malformed("the port after `:` must be digits".into())),
        None => raw,
    };
    if !host.is_ascii() {
        return Err(malformed(
            "non-ASCII host: international names must be sent in punycode (`xn--…`)".into(),
        ));
    }
    PublicName::new(host).map_err(|e: NameError| malformed(e.to_string()))
}

/// Where a [`Resolver`] reads the registry from.
pub trait RegistrySource: Send + Sync {
    /// The tenant answering to `name`, if any.
    fn find(
        &self,
        name: &PublicName,
    ) -> Result<Option<Tenant>, Box<dyn std::error::Error + Send + Sync>>;
}

impl RegistrySource for Pool<ConnectionManager<PgConnection>> {
    fn find(
        &self,
        name: &PublicName,
    ) -> Result<Option<Tenant>, Box<dyn std::error::Error + Send + Sync>> {
        let mut conn: PooledConnection<_> = self.get()?;
        Ok(registry::find(&mut conn, name)?)
    }
}

/// How hosts map to public names.
#[derive(Debug, Clone, Default)]
enum Rule {
    /// The host is the public name (or an alias).
    #[default]
    Exact,
    /// `<label>.<base>` is the tenant whose public name is `<label>`; other
    /// hosts are looked up exactly.
    SubdomainOf(String),
}

#[derive(Debug)]
struct Cache {
    generation: u64,
    entries: HashMap<PublicName, (Option<Tenant>, Instant)>,
    /// Insertion order, for evicting the oldest entry when full.
    order: VecDeque<PublicName>,
}

/// Resolves hosts to tenants through the registry, with a bounded cache.
///
/// ```no_run
/// use appschema::resolve::Resolver;
/// use diesel::r2d2::{ConnectionManager, Pool};
/// let pool = Pool::new(ConnectionManager::<diesel::PgConnection>::new("postgres:///app")).unwrap();
/// let resolver = Resolver::builder().capacity(10_000).build(pool);
/// match resolver.resolve("acme.example.com:443") {
///     Ok(Some(tenant)) => println!("schema {}", tenant.schema_name),
///     Ok(None) => println!("404: no such tenant"),
///     Err(e) => println!("400/503: {e}"),
/// }
/// ```
pub struct Resolver {
    source: Box<dyn RegistrySource>,
    rule: Rule,
    default_tenant: Option<Tenant>,
    capacity: usize,
    ttl: Duration,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("rule", &self.rule)
            .field("default_tenant", &self.default_tenant)
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Resolver`].
#[derive(Debug, Clone)]
pub struct ResolverBuilder {
    rule: Rule,
    default_tenant: Option<Tenant>,
    capacity: usize,
    ttl: Duration,
}

impl Default for ResolverBuilder {
    fn default() -> Self {
        ResolverBuilder {
            rule: Rule::Exact,
            default_tenant: None,
            capacity: 10_000,
            ttl: Duration::from_secs(60),
        }
    }
}

impl ResolverBuilder {
    /// Most cached answers kept (default 10,000); the oldest goes first.
    /// Unknown hosts are cached too, so a flood of random hosts costs at most
    /// this many entries.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// How long an answer is trusted (default 60 s). Changes made through
    /// this process's library calls are seen at once; changes made by other
    /// processes within this time.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Also resolve `<label>.<base_domain>` to the tenant whose public name is
    /// `<label>` (default: off, hosts are looked up exactly).
    pub fn subdomain_of(mut self, base_domain: &str) -> Result<Self, ResolveError> {
        let base = normalize_host(base_domain)?;
        self.rule = Rule::SubdomainOf(base.as_str().to_string());
        Ok(self)
    }

    /// The tenant unknown hosts resolve to (default: none, they resolve to
    /// `None`). Only for applications that really want a catch-all tenant.
    pub fn default_tenant(mut self, tenant: Tenant) -> Self {
        self.default_tenant = Some(tenant);
        self
    }

    /// Builds the resolver over `source` (usually an r2d2 pool).
    pub fn build(self, source: impl RegistrySource + 'static) -> Resolver {
        Resolver {
            source: Box::new(source),
            rule: self.rule,
            default_tenant: self.default_tenant,
            capacity: self.capacity,
            ttl: self.ttl,
            cache: Mutex::new(Cache {
                generation: generation(),
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }
}

impl Resolver {
    /// Starts configuring a resolver.
    pub fn builder() -> ResolverBuilder {
        ResolverBuilder::default()
    }

    /// The tenant a `Host` header value names, `None` if no tenant has that
    /// name (and no default tenant is configured).
    pub fn resolve(&self, host: &str) -> Result<Option<Tenant>, ResolveError> {
        self.resolve_name(&normalize_host(host)?)
    }

    /// The tenant answering to `name` (a public name or an alias, taken
    /// from wherever the application found it: a header, a path segment, a
    /// verified token), through the same cache as [`Resolver::resolve`].
    pub fn resolve_name(&self, name: &PublicName) -> Result<Option<Tenant>, ResolveError> {
        if let Some(hit) = self.cached(name) {
            return Ok(hit.or_else(|| self.default_tenant.clone()));
        }
        let generation_before = generation();
        let found = self.lookup(name)?;
        self.store(name.clone(), found.clone(), generation_before);
        Ok(found.or_else(|| self.default_tenant.clone()))
    }

    /// The cached answer for `name`, without touching the database (see
    /// [`Resolver::resolve_cached`]).
    pub fn resolve_name_cached(&self, name: &PublicName) -> Option<Option<Tenant>> {
        self.cached(name)
            .map(|hit| hit.or_else(|| self.default_tenant.clone()))
    }

    /// The cached answer for `host`, without touching the database: `None`
    /// when the answer is not cached (call [`Resolver::resolve`], off the
    /// async runtime's worker threads, since it may query the registry).
    pub fn resolve_cached(&self, host: &str) -> Option<Result<Option<Tenant>, ResolveError>> {
        let name = match normalize_host(host) {
            Ok(name) => name,
            Err(e) => return Some(Err(e)),
        };
        self.cached(&name)
            .map(|hit| Ok(hit.or_else(|| self.default_tenant.clone())))
    }

    /// Forgets every cached answer.
    pub fn clear(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.entries.clear();
        cache.order.clear();
    }

    /// How many answers are cached (for tests and metrics).
    pub fn cached_len(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    fn lookup(&self, name: &PublicName) -> Result<Option<Tenant>, ResolveError> {
        let registry_error = |error| ResolveError::Registry {
            host: name.to_string(),
            error,
        };
        if let Some(found) = self.source.find(name).map_err(registry_error)? {
            return Ok(Some(found));
        }
        if let Rule::SubdomainOf(base) = &self.rule {
            let label = name
                .as_str()
                .strip_suffix(base.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .filter(|label| !label.is_empty() && !label.contains('.'));
            if let Some(label) = label.and_then(|l| PublicName::new(l).ok()) {
                return self.source.find(&label).map_err(registry_error);
            }
        }
        Ok(None)
    }

    fn cached(&self, name: &PublicName) -> Option<Option<Tenant>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let now_generation = generation();
        if cache.generation != now_generation {
            cache.entries.clear();
            cache.order.clear();
            cache.generation = now_generation;
            return None;
        }
        match cache.entries.get(name) {
            Some((answer, at)) if at.elapsed() < self.ttl => Some(answer.clone()),
            _ => None,
        }
    }

    fn store(&self, name: PublicName, answer: Option<Tenant>, generation_before: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        // The registry changed while we were reading it: the answer may be
        // stale already, so do not keep it.
        if generation() != generation_before || cache.generation != generation_before {
            return;
        }
        if !cache.entries.contains_key(&name) {
            while cache.entries.len() >= self.capacity {
                match cache.order.pop_front() {
                    Some(oldest) => {
                        cache.entries.remove(&oldest);
                    }
                    None => break,
                }
            }
            cache.order.push_back(name.clone());
        }
        cache.entries.insert(name, (answer, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts_are_normalized_or_refused() {
        for (raw, want) in [
            ("acme.localhost", "acme.localhost"),
            ("ACME.LocalHost", "acme.localhost"),
            ("acme.localhost:3000", "acme.localhost"),
            ("acme.localhost.", "acme.localhost"),
            ("acme.localhost.:80", "acme.localhost"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ] {
            assert_eq!(normalize_host(raw).unwrap().as_str(), want, "{raw}");
        }
        for raw in [
            "",
            ":80",
            "evil.com@acme.localhost",
            "acme.localhost:http",
            "acme.localhost:",
            "[::1]:80",
            "bücher.example",
            "acme localhost",
            "acme.localhost/",
            "acme..localhost..",
            &"a".repeat(300),
        ] {
            assert!(normalize_host(raw).is_err(), "{raw:?} was accepted");
        }
    }
}
