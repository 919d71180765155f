//! Host → tenant resolution against a real registry.

use std::time::Duration;

use appschema::registry;
use appschema::resolve::{invalidate_all, ResolveError, Resolver};
use appschema::{PublicName, SchemaName};
use appschema_tempdb::TestDb;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::PgConnection;

fn setup() -> (TestDb, Pool<ConnectionManager<PgConnection>>) {
    let db = TestDb::new();
    let pool = Pool::builder()
        .max_size(2)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    registry::install(&mut pool.get().unwrap()).unwrap();
    (db, pool)
}

fn add(
    pool: &Pool<ConnectionManager<PgConnection>>,
    public: &str,
    schema: &str,
) -> registry::Tenant {
    registry::insert(
        &mut pool.get().unwrap(),
        &PublicName::new(public).unwrap(),
        &SchemaName::new(schema).unwrap(),
    )
    .unwrap()
}

#[test]
fn hosts_resolve_by_name_or_alias_whatever_their_case_port_or_trailing_dot() {
    let (_db, pool) = setup();
    let acme = add(&pool, "acme.localhost", "acme");
    registry::add_alias(
        &mut pool.get().unwrap(),
        &acme,
        &PublicName::new("www.acme.test").unwrap(),
    )
    .unwrap();
    let resolver = Resolver::builder().build(pool);
    for host in [
        "acme.localhost",
        "ACME.localhost:8080",
        "acme.localhost.",
        "www.acme.test:443",
    ] {
        assert_eq!(
            resolver.resolve(host).unwrap().as_ref(),
            Some(&acme),
            "{host}"
        );
    }
}

#[test]
fn unknown_hosts_resolve_to_no_tenant_and_malformed_ones_are_refused() {
    let (_db, pool) = setup();
    add(&pool, "acme.localhost", "acme");
    let resolver = Resolver::builder().build(pool);
    assert_eq!(resolver.resolve("globex.localhost").unwrap(), None);
    assert_eq!(resolver.resolve("localhost").unwrap(), None);
    for host in [
        "evil.com@acme.localhost",
        "acme.localhost:x",
        "аcme.localhost",
        "",
    ] {
        assert!(
            matches!(
                resolver.resolve(host),
                Err(ResolveError::MalformedHost { .. })
            ),
            "{host:?}"
        );
    }
}

#[test]
fn a_tenant_created_through_the_library_resolves_at_once_despite_a_cached_miss() {
    let (_db, pool) = setup();
    let resolver = Resolver::builder()
        .ttl(Duration::from_secs(3600))
        .build(pool.clone());
    assert_eq!(resolver.resolve("late.localhost").unwrap(), None);
    let late = add(&pool, "late.localhost", "late");
    // Without the invalidation, the cached miss would hide the tenant for an hour.
    assert_eq!(resolver.resolve("late.localhost").unwrap(), None);
    invalidate_all();
    assert_eq!(resolver.resolve("late.localhost").unwrap(), Some(late));
}

#[test]
fn cached_answers_expire_after_the_ttl() {
    let (_db, pool) = setup();
    let resolver = Resolver::builder()
        .ttl(Duration::from_millis(200))
        .build(pool.clone());
    assert_eq!(resolver.resolve("slow.localhost").unwrap(), None);
    let slow = add(&pool, "slow.localhost", "slow");
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(resolver.resolve("slow.localhost").unwrap(), Some(slow));
}

#[test]
fn the_cache_stays_within_its_bound_under_a_flood_of_random_hosts() {
    let (_db, pool) = setup();
    let resolver = Resolver::builder().capacity(50).build(pool);
    for i in 0..500 {
        assert_eq!(
            resolver.resolve(&format!("random{i}.localhost")).unwrap(),
            None
        );
        assert!(resolver.cached_len() <= 50);
    }
}

#[test]
fn subdomains_of_the_base_domain_resolve_by_their_label() {
    let (_db, pool) = setup();
    let acme = add(&pool, "acme", "acme");
    let resolver = Resolver::builder()
        .subdomain_of("example.com")
        .unwrap()
        .build(pool);
    assert_eq!(resolver.resolve("acme.example.com").unwrap(), Some(acme));
    assert_eq!(resolver.resolve("x.acme.example.com").unwrap(), None);
    assert_eq!(resolver.resolve("acme.example.org").unwrap(), None);
}
