//! Random names thrown at tenant creation: each is refused (nothing
//! changes), or created exactly as asked (and nothing else changes).

use std::cell::RefCell;
use std::collections::BTreeSet;

use appschema_core::provision::{create_tenant, NewTenant, ProvisionError};
use appschema_core::registry;
use appschema_tempdb::TestDb;
use appschema_testkit::provisioning::{catalog_snapshot, isolated};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The naming rules, written out independently of the library.
fn schema_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
        && !s.starts_with("pg_")
        && !s.starts_with("appschema_")
        && s != "public"
        && s != "information_schema"
}

fn public_ok(p: &str) -> Option<String> {
    let p = p.strip_suffix('.').unwrap_or(p);
    let ok = !p.is_empty()
        && p.len() <= 253
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !p.contains("..") // no empty label
        && p.as_bytes()[0].is_ascii_alphanumeric()
        && p.as_bytes()[p.len() - 1].is_ascii_alphanumeric();
    ok.then(|| p.to_ascii_lowercase())
}

/// Names near the rules' edges: look-alikes, quotes, semicolons, prefixes,
/// upper case, lengths around 63 and 253.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,12}",
        "[ab]{1,2}", // frequent collisions
        "[a-zA-Z0-9_.;'\" -]{0,16}",
        "(pg_|appschema_|public|information_schema|PG_)[a-z0-9_]{0,4}",
        "[a-zаеорсх0-9_.]{1,10}", // Cyrillic look-alikes of a e o p c x
        "[a-zA-Z0-9.-]{1,12}\\.?",
        "[a-z]{60,66}",
        "[a-z.]{250,256}",
        "[a-z]{1,6}(;|'|\"|\\\\|\u{0}|\u{200b}|é|ı)[a-z]{0,6}",
    ]
}

#[test]
fn thousands_of_random_names_are_validated_exactly_by_the_rules() {
    let mut runner = TestRunner::new(Config {
        cases: 5000,
        ..Config::default()
    });
    runner
        .run(
            &(name(), proptest::option::of(name())),
            |(public, schema)| {
                let request = NewTenant::new(&public);
                prop_assert_eq!(
                    request.is_ok(),
                    public_ok(&public).is_some(),
                    "public {:?}",
                    public
                );
                if let (Ok(request), Some(schema)) = (request, schema) {
                    let with = request.schema(&schema);
                    prop_assert_eq!(with.is_ok(), schema_ok(&schema), "schema {:?}", schema);
                    if let Err(e) = with {
                        prop_assert!(!e.to_string().is_empty());
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn random_names_are_created_exactly_as_asked_or_refused_with_nothing_changed() {
    let db = TestDb::new();
    let conn = RefCell::new(db.conn());
    registry::install(&mut conn.borrow_mut()).unwrap();
    let migrations = isolated(vec![(
        "1".into(),
        "CREATE TABLE items (id bigserial PRIMARY KEY, note text)".into(),
    )]);
    let taken = RefCell::new((BTreeSet::<String>::new(), BTreeSet::<String>::new()));
    let mut runner = TestRunner::new(Config {
        cases: 120,
        ..Config::default()
    });
    runner
        .run(
            &(name(), proptest::option::of(name())),
            |(public, schema)| {
                let conn = &mut *conn.borrow_mut();
                let (publics, schemas) = &mut *taken.borrow_mut();
                let before: BTreeSet<String> = catalog_snapshot(conn).into_iter().collect();
                let mut request = match NewTenant::new(&public) {
                    Ok(r) => r,
                    Err(_) => return Ok(()), // refused before touching the database
                };
                if let Some(s) = &schema {
                    request = match request.schema(s) {
                        Ok(r) => r,
                        Err(_) => return Ok(()),
                    };
                }
                let normalized = public_ok(&public).unwrap();
                let result = create_tenant(conn, &migrations, &request);
                let after: BTreeSet<String> = catalog_snapshot(conn).into_iter().collect();
                match result {
                    Ok(created) => {
                        prop_assert!(
                            !publics.contains(&normalized),
                            "{:?} was created twice",
                            normalized
                        );
                        prop_assert_eq!(&created.tenant.public_name, &normalized);
                        let s = created.tenant.schema_name.to_string();
                        if let Some(asked) = &schema {
                            prop_assert_eq!(&s, asked);
                        }
                        let expected: BTreeSet<String> = [
                            format!("schema {s}"),
                            format!("table {s}.items"),
                            format!("table {s}.__diesel_schema_migrations"),
                            format!("tenant {normalized} {s}"),
                            format!("name {normalized}"),
                        ]
                        .into_iter()
                        .collect();
                        let added: BTreeSet<String> = after.difference(&before).cloned().collect();
                        prop_assert_eq!(added, expected);
                        prop_assert!(before.is_subset(&after));
                        publics.insert(normalized);
                        schemas.insert(s);
                    }
                    Err(e) => {
                        let expected_refusal = match &e {
                            ProvisionError::TenantExists { .. } => publics.contains(&normalized),
                            ProvisionError::SchemaExists { schema } => schemas.contains(schema),
                            _ => false,
                        };
                        prop_assert!(
                            expected_refusal,
                            "unexpected refusal of {:?} / {:?}: {}",
                            public,
                            schema,
                            e
                        );
                        prop_assert_eq!(&after, &before);
                    }
                }
                Ok(())
            },
        )
        .unwrap();
}
