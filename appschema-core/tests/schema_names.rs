//! A path names schemas, not schema ids: a name freed by a drop, archive or
//! rename is never handed to another tenant, so a connection still holding
//! it can never read the newcomer's rows; and no tenant schema is named like
//! a role, which a path falling back to `"$user", public` would resolve.

use appschema_core::connection::SharedPool;
use appschema_core::provision::{
    create_tenant, drop_tenant, rename_tenant, restore_archive, DropMode, ProvisionError,
};
use appschema_core::SchemaName;
use appschema_testkit::provisioning::{
    app_migrations, create_named, db_with_registry, new_tenant, public_name,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

#[derive(QueryableByName)]
struct Customer {
    #[diesel(sql_type = Text)]
    name: String,
}

fn customer_names(conn: &mut PgConnection) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query("SELECT name FROM customers ORDER BY id")
        .load::<Customer>(conn)?
        .into_iter()
        .map(|c| c.name)
        .collect())
}

fn add_customer(conn: &mut PgConnection, name: &str) {
    diesel::sql_query("INSERT INTO customers (name) VALUES ($1)")
        .bind::<Text, _>(name)
        .execute(conn)
        .unwrap();
}

fn schema(name: &str) -> SchemaName {
    SchemaName::new(name).unwrap()
}

/// A database with the tenant `acme.test`, and a request holding a
/// connection on its schema (after writing a row there).
struct Held {
    db: appschema_tempdb::TestDb,
    conn: PgConnection,
    m: appschema_core::MigrationSet,
    acme: appschema_core::registry::Tenant,
    _pool: SharedPool,
    held: appschema_core::connection::TenantConnection,
}

fn acme_with_a_held_connection() -> Held {
    let (db, mut conn) = db_with_registry();
    let m = app_migrations();
    let acme = create_named(&mut conn, &m, "acme.test").tenant;
    let pool = SharedPool::builder(db.url()).max_size(1).build().unwrap();
    let mut held = pool.get_for(&acme.schema_name).unwrap();
    add_customer(&mut held, "acme's customer");
    Held {
        db,
        conn,
        m,
        acme,
        _pool: pool,
        held,
    }
}

/// A request holds a connection on `acme` while acme is dropped and someone
/// signs up asking for the same schema name.
#[test]
fn a_connection_held_across_a_drop_never_reads_the_tenant_that_asks_for_the_freed_name() {
    let Held {
        db,
        mut conn,
        m,
        acme,
        held: mut held_conn,
        ..
    } = acme_with_a_held_connection();
    let held = &mut held_conn;

    drop_tenant(&mut conn, &public_name("acme.test"), DropMode::Drop).unwrap();
    let e = create_tenant(
        &mut conn,
        &m,
        &new_tenant("newcomer.test").with_schema(acme.schema_name.clone()),
    )
    .unwrap_err();
    assert!(
        matches!(e, ProvisionError::SchemaRetired { ref schema } if schema == acme.schema_name.as_str()),
        "{e:?}"
    );
    assert!(e.to_string().contains("never reused"), "{e}");
    // Nothing of the refused creation is left.
    assert!(
        appschema_core::registry::find(&mut conn, &public_name("newcomer.test"))
            .unwrap()
            .is_none()
    );

    // A sign-up under the same public name gets a schema of its own.
    let again = create_named(&mut conn, &m, "acme.test").tenant;
    assert_ne!(again.schema_name, acme.schema_name);
    let mut fresh = db.conn();
    fresh
        .batch_execute(&format!("SET search_path = {}", again.schema_name.quoted()))
        .unwrap();
    add_customer(&mut fresh, "the newcomer's customer");

    // The held connection fails; it never reads the newcomer's rows.
    let read = customer_names(held);
    assert!(read.is_err(), "LEAK: the held connection read {read:?}");
}

#[test]
fn a_connection_held_across_a_rename_never_reads_the_tenant_that_asks_for_the_old_name() {
    let Held {
        db: _db,
        mut conn,
        m,
        acme,
        held: mut held_conn,
        ..
    } = acme_with_a_held_connection();
    let held = &mut held_conn;

    rename_tenant(
        &mut conn,
        &public_name("acme.test"),
        None,
        Some(&schema("acme_renamed")),
    )
    .unwrap();
    let e = create_tenant(
        &mut conn,
        &m,
        &new_tenant("newcomer.test").with_schema(acme.schema_name.clone()),
    )
    .unwrap_err();
    assert!(matches!(e, ProvisionError::SchemaRetired { .. }), "{e:?}");
    // Renaming another tenant onto the freed name is refused as well.
    create_named(&mut conn, &m, "other.test");
    let e = rename_tenant(
        &mut conn,
        &public_name("other.test"),
        None,
        Some(&acme.schema_name),
    )
    .unwrap_err();
    assert!(matches!(e, ProvisionError::SchemaRetired { .. }), "{e:?}");
    assert!(customer_names(held).is_err());
}

#[test]
fn an_archived_tenant_restored_under_its_own_schema_name_gets_it_back() {
    let (_db, mut conn) = db_with_registry();
    let m = app_migrations();
    let acme = create_named(&mut conn, &m, "acme.test").tenant;
    let archive = drop_tenant(&mut conn, &public_name("acme.test"), DropMode::Archive)
        .unwrap()
        .unwrap();
    // While archived, nobody else may take the name.
    let e = create_tenant(
        &mut conn,
        &m,
        &new_tenant("newcomer.test").with_schema(acme.schema_name.clone()),
    )
    .unwrap_err();
    assert!(matches!(e, ProvisionError::SchemaRetired { .. }), "{e:?}");
    let restored = restore_archive(&mut conn, &archive.schema_name, None, None).unwrap();
    assert_eq!(restored.schema_name, acme.schema_name);
}

#[test]
fn a_schema_named_like_a_role_is_refused_and_a_derived_name_moves_on() {
    let (_db, mut conn) = db_with_registry();
    #[derive(QueryableByName)]
    struct Db {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let db_name = diesel::sql_query("SELECT current_database()::text AS name")
        .get_result::<Db>(&mut conn)
        .unwrap()
        .name;
    // Roles are cluster-wide and tests run in parallel: one of this test's own.
    let role = format!("role{}", db_name.trim_start_matches("appschema_test"));
    conn.batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
        .unwrap();
    let m = app_migrations();
    let e = create_tenant(
        &mut conn,
        &m,
        &new_tenant("acme.test").with_schema(schema(&role)),
    )
    .unwrap_err();
    assert!(
        matches!(e, ProvisionError::SchemaNamedLikeRole { ref schema } if *schema == role),
        "{e:?}"
    );
    assert!(e.to_string().contains("$user"), "{e}");
    // A public name whose derived schema name is the role's gets a suffix.
    let created = create_named(&mut conn, &m, &role.replace('_', "-")).tenant;
    assert_eq!(created.schema_name.as_str(), format!("{role}_2"));
    // Renames are checked too.
    let e = rename_tenant(
        &mut conn,
        &public_name(&role.replace('_', "-")),
        None,
        Some(&schema(&role)),
    )
    .unwrap_err();
    assert!(
        matches!(e, ProvisionError::SchemaNamedLikeRole { .. }),
        "{e:?}"
    );
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let schemas = diesel::sql_query(format!(
        "SELECT count(*) AS n FROM pg_namespace WHERE nspname = '{role}'"
    ))
    .get_result::<N>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(schemas, 0);
    conn.batch_execute(&format!("DROP ROLE {role}")).unwrap();
}
