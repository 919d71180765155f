//! The session-hygiene attacks, written once for every pool: sync
//! (`appschema-core/tests/session_hygiene.rs`) and async
//! (`appschema-async/tests/session_hygiene.rs`).
//!
//! User A (tenant `t0`) leaves session state on a connection; user B, the
//! next one on the same backend (pools of one connection), must not see it.
//! Each attack returns the leak it found, `None` when none. A pool is
//! driven through [`Pool`], a checkout's connection through [`Session`].

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

/// What an attack does on a checked-out connection. Every method panics on
/// an unexpected failure, except `text` and `whoami`, which report it.
pub trait Session {
    /// Runs `sql` (one or more statements) on the simple protocol.
    fn exec(&mut self, sql: &str);
    /// One text value (column `v`), or `None` when the query fails; run in a
    /// savepoint (or a transaction) so a failure leaves a unit usable.
    fn text(&mut self, sql: &str) -> Option<String>;
    /// The connection's current schema and the marker its `items` resolves
    /// to (see [`crate::tenants::whoami`]); `Err` when the query fails.
    fn whoami(&mut self) -> Result<(Option<String>, String), String>;
    /// After a round trip, the notifications the client holds
    /// (`channel: payload`).
    fn notifications(&mut self) -> Vec<String>;
    /// Inserts into the tenant's `moods` a [`MoodValue`] bound as the
    /// tenant's own enum type `mood` (declared without a schema, so diesel
    /// resolves it by the path), in a savepoint (or a transaction);
    /// `Err` when the statement fails.
    fn insert_mood(&mut self) -> Result<(), String>;
}

/// A per-tenant enum type: every tenant schema has its own `mood`, so the
/// type is declared without a schema, as the README says.
#[derive(Debug, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(name = "mood"))]
pub struct Mood;

/// A value of [`Mood`].
#[derive(Debug, diesel::expression::AsExpression)]
#[diesel(sql_type = Mood)]
pub struct MoodValue;

impl diesel::serialize::ToSql<Mood, diesel::pg::Pg> for MoodValue {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        use std::io::Write;
        out.write_all(b"happy")?;
        Ok(diesel::serialize::IsNull::No)
    }
}

/// The statement [`Session::insert_mood`] runs.
pub const INSERT_MOOD: &str = "INSERT INTO moods (m) VALUES ($1)";

/// The pool under attack.
pub trait Pool {
    /// Runs `f` as user `who` (0 = A, 1 = B): a checkout (or unit of work)
    /// for tenant `t<who>`, or `t0` for the pools serving one tenant. A
    /// checkout that fails is reported (B locked out is a failure too).
    fn as_user(&self, who: usize, f: &mut dyn FnMut(&mut dyn Session)) -> Result<(), String>;
    /// A direct connection to the database (never through the pool).
    fn admin(&self) -> PgConnection;
}

/// The objects the attacks use; run once per database, before any attack.
pub const SETUP: &str = "CREATE SEQUENCE public.hygiene_seq;
     CREATE TABLE public.hygiene_writes (v text);
     CREATE FUNCTION public.sneaky() RETURNS void LANGUAGE plpgsql AS $$
     BEGIN
         PERFORM pg_catalog.set_config('app.user_id', 'A-secret', false);
         CREATE TEMP TABLE IF NOT EXISTS items AS
             SELECT 1::int8 AS id, 'A-secret'::text AS marker;
         LISTEN sneaky;
     END $$;
     DO $$ DECLARE s text; BEGIN
         FOR s IN SELECT nspname FROM pg_namespace WHERE nspname ~ '^t[0-9]+$' LOOP
             EXECUTE format('CREATE TYPE %I.mood AS ENUM (''happy'', ''sad'');
                             CREATE TABLE %I.moods (m %I.mood)', s, s, s);
         END LOOP;
     END $$;";

/// A row of one nullable text column `v`.
#[derive(QueryableByName, Debug)]
pub struct Value {
    /// The column `v`.
    #[diesel(sql_type = Nullable<Text>)]
    pub v: Option<String>,
}

fn admin_text(admin: &mut PgConnection, sql: &str) -> Option<String> {
    diesel::sql_query(sql)
        .get_result::<Value>(admin)
        .ok()
        .and_then(|r| r.v)
}

/// The name of the role `intruder` creates for the database `admin` is on.
pub fn intruder_name(admin: &mut PgConnection) -> String {
    let db = admin_text(admin, "SELECT current_database()::text AS v").unwrap();
    format!("intruder_{db}")
}

/// A role of this test alone (roles are cluster-wide; tests run in
/// parallel), without any privilege. The test's `Drop` removes it.
fn intruder(pool: &dyn Pool) -> String {
    let mut admin = pool.admin();
    let name = intruder_name(&mut admin);
    admin
        .batch_execute(&format!("CREATE ROLE {name} NOLOGIN"))
        .unwrap();
    name
}

fn count(s: &mut dyn Session, sql: &str) -> i64 {
    s.text(sql).unwrap().parse().unwrap()
}

fn marker(s: &mut dyn Session) -> String {
    s.whoami().unwrap().1
}

/// `Some(value)` when it is A's secret.
fn secret(value: Option<String>) -> Option<String> {
    value.filter(|v| v.contains("A-secret"))
}

/// A runs `sql`; then B runs `probe`, whose answer is the leak (if any).
fn a_then_b<T: std::fmt::Debug>(
    pool: &dyn Pool,
    sql: &str,
    mut probe: impl FnMut(&mut dyn Session) -> Option<T>,
) -> Option<String> {
    pool.as_user(0, &mut |s| s.exec(sql)).unwrap();
    b(pool, &mut probe)
}

/// B runs `probe`; a leak or a refused checkout is reported.
fn b<T: std::fmt::Debug>(
    pool: &dyn Pool,
    probe: &mut dyn FnMut(&mut dyn Session) -> Option<T>,
) -> Option<String> {
    let mut seen = None;
    match pool.as_user(1, &mut |s| seen = probe(s)) {
        Err(e) => Some(format!("B's checkout was refused: {e}")),
        Ok(()) => seen.map(|s| format!("B saw {s:?}")),
    }
}

// --- the attacks -----------------------------------------------------------

pub fn a_temp_table_named_like_a_tenant_table(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "CREATE TEMP TABLE items (id int8, marker text); INSERT INTO items VALUES (1, 'A-secret')",
        |s| secret(Some(marker(s))),
    )
}

pub fn a_temp_view_named_like_a_tenant_table(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "CREATE TEMP VIEW items AS SELECT 1::int8 AS id, 'A-secret'::text AS marker",
        |s| secret(Some(marker(s))),
    )
}

pub fn a_temp_staging_table_created_if_not_exists_by_both(pool: &dyn Pool) -> Option<String> {
    let staging = "CREATE TEMP TABLE IF NOT EXISTS staging (v text)";
    a_then_b(
        pool,
        &format!("{staging}; INSERT INTO staging VALUES ('A-secret')"),
        |s| {
            s.exec(staging);
            secret(s.text("SELECT string_agg(v, ',') AS v FROM staging"))
        },
    )
}

pub fn a_cursor_declared_with_hold(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "DECLARE leaky CURSOR WITH HOLD FOR SELECT 'A-secret'::text AS v",
        |s| secret(s.text("FETCH ALL FROM leaky")),
    )
}

pub fn a_listen_registration(pool: &dyn Pool) -> Option<String> {
    a_then_b(pool, "LISTEN a_channel", |s| {
        let n = count(s, "SELECT count(*)::text AS v FROM pg_listening_channels()");
        (n > 0).then_some(n)
    })
}

/// B reads its notifications: any is A's.
fn notifications(s: &mut dyn Session) -> Option<Vec<String>> {
    let got = s.notifications();
    (!got.is_empty()).then_some(got)
}

pub fn notifications_sent_to_a_after_it_returned_the_connection(pool: &dyn Pool) -> Option<String> {
    pool.as_user(0, &mut |s| s.exec("LISTEN a_news")).unwrap();
    pool.admin()
        .batch_execute("NOTIFY a_news, 'A-secret'")
        .unwrap();
    // The idle backend forwards it to its socket.
    std::thread::sleep(Duration::from_millis(200));
    b(pool, &mut notifications)
}

pub fn notifications_a_received_but_never_read(pool: &dyn Pool) -> Option<String> {
    pool.as_user(0, &mut |s| {
        s.exec("LISTEN a_news");
        pool.admin()
            .batch_execute("NOTIFY a_news, 'A-secret'")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // The client takes it in with this reply; then A stops listening,
        // so the server holds nothing any more, only the client does.
        s.exec("SELECT 1; UNLISTEN *");
    })
    .unwrap();
    b(pool, &mut notifications)
}

pub fn a_custom_setting_read_by_row_level_security(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "SELECT set_config('app.user_id', 'A-secret', false)",
        |s| secret(s.text("SELECT current_setting('app.user_id', true) AS v")),
    )
}

pub fn a_plain_session_setting(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "SET work_mem = '77MB'; SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        |s| {
            let v = s
                .text(
                    "SELECT current_setting('work_mem') || ' ' || \
                     current_setting('default_transaction_read_only') AS v",
                )
                .unwrap();
            (v != "4MB off").then_some(v)
        },
    )
}

pub fn a_role_left_set(pool: &dyn Pool) -> Option<String> {
    let intruder = intruder(pool);
    a_then_b(pool, &format!("SET ROLE {intruder}"), |s| {
        let v = s.text("SELECT current_user::text AS v").unwrap();
        let locked_out = s.whoami().is_err();
        (v == intruder || locked_out).then(|| format!("current_user {v}, locked out: {locked_out}"))
    })
}

pub fn a_session_authorization_left_set(pool: &dyn Pool) -> Option<String> {
    let intruder = intruder(pool);
    a_then_b(
        pool,
        &format!("SET SESSION AUTHORIZATION {intruder}"),
        |s| {
            let v = s.text("SELECT session_user::text AS v").unwrap();
            (v == intruder).then_some(v)
        },
    )
}

pub fn a_session_advisory_lock(pool: &dyn Pool) -> Option<String> {
    let leak = a_then_b(pool, "SELECT pg_advisory_lock(4242)", |_| None::<()>);
    let free = admin_text(
        &mut pool.admin(),
        "SELECT pg_try_advisory_lock(4242)::text AS v",
    );
    leak.or((free.as_deref() != Some("true")).then(|| "A's advisory lock is still held".to_string()))
}

pub fn lastval_of_a_sequence_a_used(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "SELECT setval('public.hygiene_seq', 4242); SELECT nextval('public.hygiene_seq')",
        |s| s.text("SELECT lastval()::text AS v"),
    )
}

pub fn state_left_by_a_plpgsql_function(pool: &dyn Pool) -> Option<String> {
    a_then_b(pool, "SELECT public.sneaky()", |s| {
        let setting = secret(s.text("SELECT current_setting('app.user_id', true) AS v"));
        let marker = secret(Some(marker(s)));
        let listening = count(s, "SELECT count(*)::text AS v FROM pg_listening_channels()");
        (setting.is_some() || marker.is_some() || listening > 0)
            .then(|| format!("{setting:?} {marker:?} listening {listening}"))
    })
}

/// B's transactions must begin read-write, `READ COMMITTED`, not
/// deferrable (the test server's defaults), and B must be able to write.
fn transaction_characteristics(s: &mut dyn Session) -> Option<String> {
    let v = s
        .text(
            "SELECT current_setting('transaction_isolation') || ', read only ' || \
             current_setting('transaction_read_only') || ', deferrable ' || \
             current_setting('transaction_deferrable') AS v",
        )
        .unwrap();
    let wrote = s.text("INSERT INTO public.hygiene_writes VALUES ('B') RETURNING v");
    (v != "read committed, read only off, deferrable off" || wrote.is_none())
        .then(|| format!("{v}; B's INSERT {wrote:?}"))
}

pub fn session_characteristics_left_set(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE",
        transaction_characteristics,
    )
}

pub fn session_read_only_left_set(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        transaction_characteristics,
    )
}

pub fn default_transaction_settings_left_by_set_config(pool: &dyn Pool) -> Option<String> {
    a_then_b(
        pool,
        "SELECT set_config('default_transaction_read_only', 'on', false), \
                set_config('default_transaction_isolation', 'repeatable read', false), \
                set_config('default_transaction_deferrable', 'on', false)",
        transaction_characteristics,
    )
}

/// Diesel caches a custom type's OID per connection by name: after A (on
/// `t0`) bound `mood` (resolved by the path to `t0.mood`), B's `mood` on
/// `t1` must not be bound as `t0.mood` (its INSERT would fail).
pub fn a_per_tenant_enum_resolved_by_a(pool: &dyn Pool) -> Option<String> {
    pool.as_user(0, &mut |s| s.insert_mood().unwrap()).unwrap();
    b(pool, &mut |s| s.insert_mood().err())
}

/// `setseed()` survives `RESET ALL` and `DISCARD ALL`: B's `random()`
/// must not be the one A's seed predicts, nor the same at two checkouts
/// (a reseed with a constant would be as predictable).
pub fn a_random_seed_left_set(pool: &dyn Pool) -> Option<String> {
    let mut admin = pool.admin();
    admin.batch_execute("SELECT setseed(0.4242)").unwrap();
    let predicted = admin_text(&mut admin, "SELECT random()::text AS v").unwrap();
    pool.as_user(0, &mut |s| s.exec("SELECT setseed(0.4242)"))
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        if let Some(leak) = b(pool, &mut |s| {
            seen.push(s.text("SELECT random()::text AS v").unwrap());
            None::<()>
        }) {
            return Some(leak);
        }
    }
    (seen[0] == predicted || seen[0] == seen[1])
        .then(|| format!("random() {seen:?}; A's seed predicts {predicted}"))
}

/// User code runs `RESET ALL` in the middle of B's checkout: the path must
/// fall back to the shared schema, never to `"$user", public`, where a
/// schema named like the login role would answer.
pub fn reset_all_in_the_middle_of_a_checkout(pool: &dyn Pool) -> Option<String> {
    let mut admin = pool.admin();
    let role = admin_text(&mut admin, "SELECT session_user::text AS v").unwrap();
    let q = appschema_core::quote_ident(&role);
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {q}; CREATE TABLE {q}.items (id int8 PRIMARY KEY, marker text);
             INSERT INTO {q}.items VALUES (1, 'A-secret: the schema named like the login role');"
        ))
        .unwrap();
    b(pool, &mut |s| {
        s.exec("RESET ALL");
        secret(Some(marker(s)))
    })
}

/// One test per attack on the pool `$make` builds (an expression of a type
/// implementing [`Pool`], given `$kind`), expecting no leak, or a leak from
/// every attack (`$expect_leak`: the control proving each probe works).
#[macro_export]
macro_rules! attacks_on {
    ($module:ident, $make:expr, $expect_leak:expr; $($attack:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $attack() {
                    let pool = $make;
                    let leak = $crate::attacks::$attack(&pool);
                    if $expect_leak {
                        assert!(leak.is_some(), "the probe found no leak where one is expected");
                    } else {
                        assert_eq!(leak, None, "LEAK");
                    }
                }
            )*
        }
    };
}

/// [`attacks_on!`] with every attack that applies to every pool, plus
/// `$extra` ones.
#[macro_export]
macro_rules! all_attacks {
    ($module:ident, $make:expr, $expect_leak:expr $(, $extra:ident)*) => {
        $crate::attacks_on!($module, $make, $expect_leak;
            a_temp_table_named_like_a_tenant_table,
            a_temp_view_named_like_a_tenant_table,
            a_temp_staging_table_created_if_not_exists_by_both,
            a_cursor_declared_with_hold,
            a_listen_registration,
            notifications_sent_to_a_after_it_returned_the_connection,
            notifications_a_received_but_never_read,
            a_custom_setting_read_by_row_level_security,
            a_plain_session_setting,
            a_role_left_set,
            a_session_authorization_left_set,
            a_session_advisory_lock,
            lastval_of_a_sequence_a_used,
            state_left_by_a_plpgsql_function,
            session_characteristics_left_set,
            session_read_only_left_set,
            default_transaction_settings_left_by_set_config,
            a_random_seed_left_set,
            $($extra,)*
        );
    };
}

/// The sync pools' connections (a checkout derefs to one, a unit of work
/// gets one) under attack.
impl Session for PgConnection {
    fn exec(&mut self, sql: &str) {
        self.batch_execute(sql).unwrap();
    }

    fn text(&mut self, sql: &str) -> Option<String> {
        text(self, sql)
    }

    fn whoami(&mut self) -> Result<(Option<String>, String), String> {
        crate::tenants::whoami(self)
            .map(|me| (me.schema, me.marker))
            .map_err(|e| e.to_string())
    }

    fn notifications(&mut self) -> Vec<String> {
        self.batch_execute("SELECT 1").unwrap();
        self.notifications_iter()
            .filter_map(Result::ok)
            .map(|n| format!("{}: {}", n.channel, n.payload))
            .collect()
    }

    fn insert_mood(&mut self) -> Result<(), String> {
        self.transaction(|c| {
            diesel::sql_query(INSERT_MOOD)
                .bind::<Mood, _>(MoodValue)
                .execute(c)
        })
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

/// One text value, or `None` when the query fails; run in a savepoint (or a
/// transaction) so a failure leaves a unit of work usable.
pub fn text(conn: &mut PgConnection, sql: &str) -> Option<String> {
    conn.transaction(|c| diesel::sql_query(sql).get_result::<Value>(c))
        .ok()
        .and_then(|r| r.v)
}
