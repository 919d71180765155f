//! A tenant's domains: aliases, one primary, against a real PostgreSQL.

use appschema_core::provision::{
    add_domain, list_domains, remove_domain, set_primary_domain, Domain, ProvisionError,
};
use appschema_core::registry;
use appschema_core::resolve::Resolver;
use appschema_testkit::provisioning::{
    app_migrations, create_named, db_with_registry, public_name,
};
use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::PgConnection;

fn domains(conn: &mut PgConnection, tenant: &str) -> Vec<(String, bool)> {
    list_domains(conn, &public_name(tenant))
        .unwrap()
        .into_iter()
        .map(|Domain { name, primary }| (name, primary))
        .collect()
}

fn owned(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(n, p)| (n.to_string(), *p)).collect()
}

#[test]
fn a_tenant_answers_to_every_domain_and_keeps_exactly_one_primary() {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    let acme = create_named(&mut conn, &m, "acme.example.com").tenant;
    create_named(&mut conn, &m, "globex.example.com");
    let pool = Pool::builder()
        .max_size(1)
        .build(ConnectionManager::<PgConnection>::new(db.url()))
        .unwrap();
    let resolver = Resolver::builder().build(pool);
    assert!(resolver.resolve("shop.acme.com").unwrap().is_none());

    add_domain(
        &mut conn,
        &public_name("acme.example.com"),
        &public_name("Shop.Acme.com"),
    )
    .unwrap();
    // Any domain names the tenant, here as elsewhere; the cached "unknown"
    // answer is gone.
    add_domain(
        &mut conn,
        &public_name("shop.acme.com"),
        &public_name("acme.test"),
    )
    .unwrap();
    assert_eq!(
        domains(&mut conn, "acme.test"),
        owned(&[
            ("acme.example.com", true),
            ("acme.test", false),
            ("shop.acme.com", false)
        ])
    );
    assert_eq!(
        resolver.resolve("shop.acme.com:443").unwrap(),
        Some(acme.clone())
    );

    // A domain belongs to one tenant at most.
    for taken in ["acme.test", "globex.example.com", "acme.example.com"] {
        let err = add_domain(
            &mut conn,
            &public_name("globex.example.com"),
            &public_name(taken),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ProvisionError::DomainTaken { domain } if domain == taken),
            "{err}"
        );
    }
    assert!(matches!(
        add_domain(
            &mut conn,
            &public_name("initech.example.com"),
            &public_name("x.test")
        ),
        Err(ProvisionError::UnknownTenant { .. })
    ));

    // The primary cannot go; another is made primary first.
    let err = remove_domain(
        &mut conn,
        &public_name("acme.test"),
        &public_name("acme.example.com"),
    )
    .unwrap_err();
    assert!(matches!(err, ProvisionError::PrimaryDomain { .. }), "{err}");
    assert!(err.to_string().contains("domain primary"), "{err}");
    let now = set_primary_domain(&mut conn, &public_name("shop.acme.com")).unwrap();
    assert_eq!(
        (now.id, now.public_name.as_str()),
        (acme.id, "shop.acme.com")
    );
    assert_eq!(
        registry::find(&mut conn, &public_name("acme.test")).unwrap(),
        Some(now.clone())
    );
    assert_eq!(
        resolver.resolve("acme.example.com").unwrap(),
        Some(now.clone())
    );
    remove_domain(
        &mut conn,
        &public_name("acme.test"),
        &public_name("acme.example.com"),
    )
    .unwrap();
    assert_eq!(
        domains(&mut conn, "shop.acme.com"),
        owned(&[("shop.acme.com", true), ("acme.test", false)])
    );
    assert!(resolver.resolve("acme.example.com").unwrap().is_none());

    // Another tenant's domain is not this one's to remove.
    let err = remove_domain(
        &mut conn,
        &public_name("acme.test"),
        &public_name("globex.example.com"),
    )
    .unwrap_err();
    assert!(matches!(err, ProvisionError::UnknownDomain { .. }), "{err}");
    assert_eq!(
        domains(&mut conn, "globex.example.com"),
        owned(&[("globex.example.com", true)])
    );

    // The database itself refuses a second primary.
    let second = conn.batch_execute(
        "UPDATE public.appschema_public_names SET is_primary = true WHERE public_name = 'acme.test'",
    );
    assert!(second.is_err(), "a second primary domain was accepted");
}
