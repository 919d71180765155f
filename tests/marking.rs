//! `#[appschema::shared]` and `#[appschema::isolated]` against a real server:
//! shared tables read the shared schema on every connection; isolated tables
//! read whichever tenant the connection's `search_path` names.

use appschema::{ColumnMeta, Scope, TableMeta};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_dsl::LoadQuery;

#[appschema::shared]
pub mod shared {
    diesel::table! { plans (id) { id -> Int8, name -> Text } }
}

#[appschema::isolated]
pub mod tenant {
    use super::shared::plans;

    diesel::table! { orders (id) { id -> Int8, plan_id -> Int8, total -> Int8 } }

    diesel::joinable!(orders -> plans (plan_id));
    diesel::allow_tables_to_appear_in_same_query!(orders, plans);
}

#[appschema::isolated(file = "tests/schema/tenant.rs")]
pub mod generated {}

/// Several tables on each side. One `allow_tables_to_appear_in_same_query!`
/// names every table that may meet another in a query, isolated and shared
/// (diesel wants each pair declared once in the crate, so the shared module
/// does not declare its own pair again).
#[appschema::shared]
pub mod catalog {
    diesel::table! { plans (id) { id -> Int8, name -> Text } }
    diesel::table! { currencies (code) { code -> Text, symbol -> Text } }
}

#[appschema::isolated]
pub mod billing {
    use super::catalog::{currencies, plans};

    diesel::table! { orders (id) { id -> Int8, plan_id -> Int8, total -> Int8 } }
    diesel::table! { invoices (id) { id -> Int8, order_id -> Int8, currency -> Text } }

    diesel::joinable!(orders -> plans (plan_id));
    diesel::joinable!(invoices -> orders (order_id));
    diesel::joinable!(invoices -> currencies (currency));
    diesel::allow_tables_to_appear_in_same_query!(orders, invoices, plans, currencies);
}

#[appschema::isolated(file = "tests/schema/tenant_printed_from_t1.rs")]
pub mod printed_from_t1 {}

/// A connection whose `search_path` is `"<schema>", public`, as appschema sets it.
fn tenant_conn(db: &TestDb, schema: &str) -> PgConnection {
    let mut conn = db.conn();
    diesel::sql_query(format!("SET search_path TO \"{schema}\", public"))
        .execute(&mut conn)
        .unwrap();
    conn
}

/// The rows `query()` loads on a `t1` connection and on a `t2` connection.
fn on_t1_and_t2<Q, U>(db: &TestDb, query: impl Fn() -> Q) -> (Vec<U>, Vec<U>)
where
    Q: RunQueryDsl<PgConnection> + LoadQuery<'static, PgConnection, U>,
{
    let load = |schema| query().load(&mut tenant_conn(db, schema)).unwrap();
    (load("t1"), load("t2"))
}

/// Two tenants, `t1` and `t2`, each with its own `orders` and `invoices`, one
/// shared `public.plans`, and a decoy `t1.plans` that an unqualified `plans`
/// would find first on a `t1` connection.
fn two_tenants() -> TestDb {
    let db = TestDb::new();
    let mut conn = db.conn();
    conn.batch_execute(
        r#"
        CREATE TABLE public.plans (id int8 PRIMARY KEY, name text NOT NULL);
        INSERT INTO public.plans VALUES (1, 'basic'), (2, 'pro');
        CREATE SCHEMA t1;
        CREATE SCHEMA t2;
        CREATE TABLE t1.plans (id int8 PRIMARY KEY, name text NOT NULL);
        INSERT INTO t1.plans VALUES (1, 'decoy in t1');
        CREATE TABLE t1.orders (id int8 PRIMARY KEY, plan_id int8 NOT NULL REFERENCES public.plans, total int8 NOT NULL);
        CREATE TABLE t2.orders (id int8 PRIMARY KEY, plan_id int8 NOT NULL REFERENCES public.plans, total int8 NOT NULL);
        INSERT INTO t1.orders VALUES (10, 1, 100), (11, 2, 110);
        INSERT INTO t2.orders VALUES (20, 2, 200);
        CREATE TABLE t1.invoices (id int8 PRIMARY KEY, number varchar(40) NOT NULL, note text);
        CREATE TABLE t2.invoices (id int8 PRIMARY KEY, number varchar(40) NOT NULL, note text);
        INSERT INTO t1.invoices VALUES (1, 'T1-0001', NULL);
        INSERT INTO t2.invoices VALUES (1, 'T2-0001', 'paid');
        "#,
    )
    .unwrap();
    db
}

#[test]
fn shared_tables_are_schema_qualified_and_isolated_tables_are_not() {
    let plans = shared::plans::table.select(shared::plans::name);
    assert_eq!(
        diesel::debug_query::<Pg, _>(&plans).to_string(),
        r#"SELECT "public"."plans"."name" FROM "public"."plans" -- binds: []"#
    );
    let orders = tenant::orders::table.select(tenant::orders::total);
    assert_eq!(
        diesel::debug_query::<Pg, _>(&orders).to_string(),
        r#"SELECT "orders"."total" FROM "orders" -- binds: []"#
    );
    let invoices = generated::invoices::table.select(generated::invoices::number);
    assert_eq!(
        diesel::debug_query::<Pg, _>(&invoices).to_string(),
        r#"SELECT "invoices"."number" FROM "invoices" -- binds: []"#
    );
}

#[test]
fn the_same_isolated_query_returns_each_tenants_own_rows() {
    let db = two_tenants();
    let query = || {
        tenant::orders::table
            .select((tenant::orders::id, tenant::orders::total))
            .order(tenant::orders::id)
    };
    let (t1, t2): (Vec<(i64, i64)>, _) = on_t1_and_t2(&db, query);
    assert_eq!(t1, [(10, 100), (11, 110)]);
    assert_eq!(t2, [(20, 200)]);
}

#[test]
fn a_shared_query_returns_the_shared_rows_on_every_tenants_connection() {
    let db = two_tenants();
    let query = || {
        shared::plans::table
            .select(shared::plans::name)
            .order(shared::plans::id)
    };
    let (t1, t2): (Vec<String>, _) = on_t1_and_t2(&db, query);
    // t1 has a `plans` table of its own: an unqualified query would read it.
    assert_eq!(t1, ["basic", "pro"]);
    assert_eq!(t2, ["basic", "pro"]);
}

#[test]
fn isolated_orders_join_shared_plans_on_each_tenant() {
    let db = two_tenants();
    let query = || {
        tenant::orders::table
            .inner_join(shared::plans::table)
            .select((tenant::orders::id, shared::plans::name))
            .order(tenant::orders::id)
    };
    let (t1, t2): (Vec<(i64, String)>, _) = on_t1_and_t2(&db, query);
    assert_eq!(t1, [(10, "basic".to_string()), (11, "pro".to_string())]);
    assert_eq!(t2, [(20, "pro".to_string())]);
}

#[test]
fn tables_read_from_a_print_schema_file_are_isolated_too() {
    let db = two_tenants();
    let query = || {
        generated::invoices::table.select((generated::invoices::number, generated::invoices::note))
    };
    let (t1, t2): (Vec<(String, Option<String>)>, _) = on_t1_and_t2(&db, query);
    assert_eq!(t1, [("T1-0001".to_string(), None)]);
    assert_eq!(t2, [("T2-0001".to_string(), Some("paid".to_string()))]);
}

#[test]
fn a_file_printed_from_one_tenants_schema_serves_every_tenant() {
    let db = two_tenants();
    let query = || {
        printed_from_t1::orders::table
            .select(printed_from_t1::orders::id)
            .order(printed_from_t1::orders::id)
    };
    assert_eq!(
        diesel::debug_query::<Pg, _>(&query()).to_string(),
        r#"SELECT "orders"."id" FROM "orders" ORDER BY "orders"."id" -- binds: []"#
    );
    let t2: Vec<i64> = query().load(&mut tenant_conn(&db, "t2")).unwrap();
    assert_eq!(t2, [20]);
}

/// What a marking attribute records about a column.
const fn column(name: &'static str, sql_type: &'static str) -> ColumnMeta {
    ColumnMeta { name, sql_type }
}

#[test]
fn each_module_lists_its_tables_with_scope_schema_and_columns() {
    assert_eq!(
        shared::TABLES,
        [TableMeta {
            name: "plans",
            scope: Scope::Shared,
            schema: Some("public"),
            columns: const { &[column("id", "Int8"), column("name", "Text")] },
        }]
    );
    assert_eq!(
        tenant::TABLES,
        [TableMeta {
            name: "orders",
            scope: Scope::Isolated,
            schema: None,
            columns: const {
                &[
                    column("id", "Int8"),
                    column("plan_id", "Int8"),
                    column("total", "Int8"),
                ]
            },
        }]
    );
    assert_eq!(
        generated::TABLES,
        [TableMeta {
            name: "invoices",
            scope: Scope::Isolated,
            schema: None,
            columns: const {
                &[
                    column("id", "Int8"),
                    column("number", "Varchar"),
                    column("note", "Nullable<Text>"),
                ]
            },
        }]
    );
}

#[test]
fn joins_across_scopes_span_several_tables_on_each_side() {
    use billing::{invoices, orders};
    use catalog::{currencies, plans};

    let db = TestDb::new();
    db.conn()
        .batch_execute(
            r#"
            CREATE TABLE public.plans (id int8 PRIMARY KEY, name text NOT NULL);
            CREATE TABLE public.currencies (code text PRIMARY KEY, symbol text NOT NULL);
            INSERT INTO public.plans VALUES (1, 'basic'), (2, 'pro');
            INSERT INTO public.currencies VALUES ('EUR', '€'), ('USD', '$');
            CREATE SCHEMA t1;
            CREATE SCHEMA t2;
            CREATE TABLE t1.orders (id int8 PRIMARY KEY, plan_id int8 NOT NULL REFERENCES public.plans, total int8 NOT NULL);
            CREATE TABLE t2.orders (LIKE t1.orders INCLUDING ALL);
            CREATE TABLE t1.invoices (id int8 PRIMARY KEY, order_id int8 NOT NULL, currency text NOT NULL REFERENCES public.currencies);
            CREATE TABLE t2.invoices (LIKE t1.invoices INCLUDING ALL);
            INSERT INTO t1.orders VALUES (10, 1, 100), (11, 2, 110);
            INSERT INTO t1.invoices VALUES (1, 10, 'EUR'), (2, 11, 'USD');
            INSERT INTO t2.orders VALUES (20, 2, 200);
            INSERT INTO t2.invoices VALUES (1, 20, 'USD');
            "#,
        )
        .unwrap();
    let query = || {
        invoices::table
            .inner_join(orders::table.inner_join(plans::table))
            .inner_join(currencies::table)
            .order(invoices::id)
            .select((invoices::id, orders::total, plans::name, currencies::symbol))
    };
    assert_eq!(
        diesel::debug_query::<Pg, _>(&query()).to_string(),
        r#"SELECT "invoices"."id", "orders"."total", "public"."plans"."name", "public"."currencies"."symbol" FROM (("invoices" INNER JOIN ("orders" INNER JOIN "public"."plans" ON ("orders"."plan_id" = "public"."plans"."id")) ON ("invoices"."order_id" = "orders"."id")) INNER JOIN "public"."currencies" ON ("invoices"."currency" = "public"."currencies"."code")) ORDER BY "invoices"."id" -- binds: []"#
    );
    let (t1, t2): (Vec<(i64, i64, String, String)>, _) = on_t1_and_t2(&db, query);
    assert_eq!(
        t1,
        [
            (1, 100, "basic".into(), "€".into()),
            (2, 110, "pro".into(), "$".into())
        ]
    );
    assert_eq!(t2, [(1, 200, "pro".into(), "$".into())]);
}
