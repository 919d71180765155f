//! The `search_path` a tenant's work runs on, and the one query that puts a
//! connection on it.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Bool, Nullable, Text};

use super::error::ConnectionError;
use super::hygiene::CHECKOUT_RESET;
use crate::name::{push_literal, quote_ident, SchemaName, MAX_IDENTIFIER_BYTES};

/// Which schemas follow the tenant's on its `search_path`: the shared schema
/// (`public` unless changed), then any extra schemas (e.g. one holding
/// extensions). A tenant's path is `"<tenant>", "<shared>", "<extra>"…`;
/// shared-only work runs on `"<shared>", "<extra>"…`. Every name is quoted.
///
/// ```
/// use appschema::{SchemaName, connection::SearchPath};
/// let path = SearchPath::new().extra_schema("extensions").unwrap();
/// let acme = SchemaName::new("acme").unwrap();
/// assert_eq!(path.for_tenant(&acme), r#""acme", "public", "extensions""#);
/// assert_eq!(path.shared_only(), r#""public", "extensions""#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPath {
    shared: String,
    extra: Vec<String>,
}

impl Default for SearchPath {
    fn default() -> Self {
        SearchPath {
            shared: "public".to_string(),
            extra: Vec::new(),
        }
    }
}

impl SearchPath {
    /// The default: the shared schema is `public`, no extra schemas.
    pub fn new() -> SearchPath {
        SearchPath::default()
    }

    /// Uses `name` as the shared schema instead of `public`.
    pub fn shared_schema(mut self, name: &str) -> Result<SearchPath, ConnectionError> {
        check_identifier(name)?;
        self.shared = name.to_string();
        Ok(self)
    }

    /// Appends `name` after the shared schema (default: none).
    pub fn extra_schema(mut self, name: &str) -> Result<SearchPath, ConnectionError> {
        check_identifier(name)?;
        self.extra.push(name.to_string());
        Ok(self)
    }

    /// The shared schema's bare name.
    pub fn shared(&self) -> &str {
        &self.shared
    }

    /// The `search_path` value for `tenant`'s work.
    pub fn for_tenant(&self, tenant: &SchemaName) -> String {
        let mut out = tenant.quoted();
        for name in self.shared_schemas() {
            out.push_str(", ");
            out.push_str(&quote_ident(name));
        }
        out
    }

    /// Writes into `out` (cleared first) the value [`for_tenant`] or, with
    /// no tenant, [`shared_only`] returns, without allocating once `out` has
    /// grown.
    ///
    /// [`for_tenant`]: SearchPath::for_tenant
    /// [`shared_only`]: SearchPath::shared_only
    #[doc(hidden)]
    pub fn write(&self, out: &mut String, tenant: Option<&SchemaName>) {
        out.clear();
        if let Some(t) = tenant {
            push_quoted(out, t.as_str());
            out.push_str(", ");
        }
        push_quoted(out, &self.shared);
        for name in &self.extra {
            out.push_str(", ");
            push_quoted(out, name);
        }
    }

    /// The bare names of the shared schema and the extra schemas, in path
    /// order: the schemas every tenant's path shares.
    ///
    /// ```
    /// use appschema::connection::SearchPath;
    /// let path = SearchPath::new().extra_schema("extensions")?;
    /// assert_eq!(path.shared_schemas().collect::<Vec<_>>(), ["public", "extensions"]);
    /// # Ok::<(), appschema::ConnectionError>(())
    /// ```
    pub fn shared_schemas(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.shared.as_str()).chain(self.extra.iter().map(String::as_str))
    }

    /// The `search_path` value for shared-only work (no tenant).
    pub fn shared_only(&self) -> String {
        self.shared_schemas()
            .map(quote_ident)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads a path as configuration gives it (the CLI's `--search-path`, an
/// environment variable): the shared schema, then the extra schemas,
/// separated by commas; a name may be double-quoted (`""` inside stands
/// for `"`). `public, extensions` is [`SearchPath::new`] plus the extra
/// schema `extensions`.
///
/// ```
/// use appschema::connection::SearchPath;
/// let path: SearchPath = "public, extensions".parse()?;
/// assert_eq!(path, SearchPath::new().extra_schema("extensions")?);
/// let path: SearchPath = r#""Core", ext"#.parse()?;
/// assert_eq!(path.shared_only(), r#""Core", "ext""#);
/// # Ok::<(), appschema::ConnectionError>(())
/// ```
impl std::str::FromStr for SearchPath {
    type Err = ConnectionError;

    fn from_str(s: &str) -> Result<SearchPath, ConnectionError> {
        let mut names = s.split(',').map(|name| {
            let name = name.trim();
            match name
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
            {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => name.to_string(),
            }
        });
        let shared = names.next().unwrap_or_default();
        let mut path = SearchPath::new().shared_schema(&shared)?;
        for name in names {
            path = path.extra_schema(&name)?;
        }
        Ok(path)
    }
}

/// Appends `name` as a quoted identifier (what [`quote_ident`] returns).
fn push_quoted(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// The shared and extra schemas are trusted configuration, not request data,
/// so any identifier PostgreSQL keeps whole is accepted (it is quoted anyway).
fn check_identifier(name: &str) -> Result<(), ConnectionError> {
    let invalid = |source| ConnectionError::invalid_name(name, source);
    if name.is_empty() {
        return Err(invalid(crate::NameError::Empty {
            kind: "schema name",
        }));
    }
    if name.len() > MAX_IDENTIFIER_BYTES || name.contains('\0') {
        return Err(invalid(crate::NameError::TooLong {
            kind: "schema name",
            name: name.to_string(),
            len: name.len(),
            max: MAX_IDENTIFIER_BYTES,
        }));
    }
    Ok(())
}

/// What the server reported after a switch, all from the switch's own row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwitchReport {
    /// `set_config`'s return value: the setting as the server now holds it.
    pub(crate) search_path: String,
    /// `current_schema()` after the switch: the first schema of the path
    /// that exists (NULL when none does).
    pub(crate) current_schema: Option<String>,
}

/// `SELECT pg_catalog.set_config('search_path', $1, $2)` plus `current_schema()`, in one statement so a switch costs one round trip. Its SQL never
/// changes, so diesel prepares it once per connection and reuses it.
///
/// The subquery with `OFFSET 0` is evaluated before the outer target list,
/// so `current_schema()` sees the new path.
#[derive(Debug, Clone, Copy)]
struct SwitchQuery<'a> {
    path: &'a str,
    local: bool,
}

impl QueryId for SwitchQuery<'_> {
    type QueryId = SwitchQuery<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for SwitchQuery<'_> {
    type SqlType = (Text, Nullable<Text>);
}

impl QueryFragment<Pg> for SwitchQuery<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT s.v, pg_catalog.current_schema() FROM (SELECT pg_catalog.set_config('search_path', ",
        );
        out.push_bind_param::<Text, _>(self.path)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.local)?;
        out.push_sql(") AS v OFFSET 0) s");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for SwitchQuery<'_> {}

/// Runs the switch and returns what the server reported. `local` makes it a
/// `SET LOCAL` (undone when the transaction ends).
pub(crate) fn run_switch(
    conn: &mut PgConnection,
    path: &str,
    local: bool,
) -> QueryResult<SwitchReport> {
    let (search_path, current_schema) =
        SwitchQuery { path, local }.get_result::<(String, Option<String>)>(conn)?;
    Ok(SwitchReport {
        search_path,
        current_schema,
    })
}

/// Why a switch's report was not the one asked for.
#[derive(Debug)]
pub enum Refusal {
    /// The expected first schema does not exist.
    SchemaMissing,
    /// The server holds another value: the connection must not be used.
    Broken(String),
    /// The session was left in another role or listening (session switch
    /// only): reset, then switch again.
    Dirty,
    /// The statement failed for another reason.
    Failed(diesel::result::Error),
}

impl Refusal {
    /// The refusal as the session switch reports it (a dirty session that
    /// is still dirty after its reset is broken).
    pub fn into_session(self) -> SessionRefusal {
        match self {
            Refusal::SchemaMissing => SessionRefusal::SchemaMissing,
            Refusal::Broken(m) => SessionRefusal::Broken(m),
            Refusal::Dirty => SessionRefusal::Broken("the session could not be reset".to_string()),
            Refusal::Failed(e) => SessionRefusal::Failed(e),
        }
    }
}

impl SwitchReport {
    /// Checks the report against the path and first schema asked for.
    pub(crate) fn check(&self, path: &str, first_schema: &str) -> Result<(), Refusal> {
        if self.search_path != path {
            return Err(Refusal::Broken(format!(
                "the server reports search_path {:?}, expected {path:?}",
                self.search_path
            )));
        }
        if self.current_schema.as_deref() != Some(first_schema) {
            return Err(Refusal::SchemaMissing);
        }
        Ok(())
    }
}

/// Markers in the errors the session switch raises on purpose; the client
/// recognises its own refusals by them. Each is the name of a configuration
/// parameter that cannot exist (no built-in one has spaces, and a custom one
/// needs a dot), so `current_setting` of it always raises
/// `unrecognized configuration parameter "<marker>"`.
const OPEN_TRANSACTION: &str = "appschema: connection returned inside an open transaction block";
const SCHEMA_MISSING: &str = "appschema: first schema of the path missing";
const PATH_MISMATCH: &str = "appschema: server holds another search_path";
const SESSION_DIRTY: &str = "appschema: role changed or channels listened to";

/// The name under which [`prepare_session_switch`] prepares the switch on
/// each connection of a [`SharedPool`](super::SharedPool).
const SWITCH_STATEMENT: &str = "appschema_search_path_switch";

/// What a connection of a [`SharedPool`](super::SharedPool) was like right
/// after connecting, baked into its prepared switch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnectFacts {
    /// `session_user` at connect: any other `session_user` or
    /// `current_user` at checkout means `SET ROLE` / `SET SESSION
    /// AUTHORIZATION` was left behind.
    login_role: String,
    /// Whether the start-up options took effect (the `search_path` was the
    /// one they set). When a proxy dropped them, `RESET ALL` returns to the
    /// server's defaults, and the switch re-applies diesel's settings.
    startup_options_applied: bool,
}

/// The body of the prepared check that comes before the switch: `$1` is
/// the seed for `random()` (see [`write_seed`]), `$2` the first schema of
/// the path to switch to.
///
/// It runs after [`CHECKOUT_RESET`](super::hygiene::CHECKOUT_RESET) and
/// before the `SET search_path` in the same message (one implicit
/// transaction), so it always runs under the connection's default path and
/// changes no path itself: PostgreSQL re-analyses and re-plans a cached
/// statement whenever the `search_path` it starts under differs from the
/// one it last ran under, and a statement that set the path itself (the
/// previous release's switch) was re-planned on every checkout once
/// `RESET ALL` came before it (about 15 µs of server time, measured; see
/// BENCHMARKS.md).
///
/// One `CASE`, whose branches PostgreSQL evaluates in order:
///
/// 1. The open-transaction check, first, so nothing is set inside a
///    transaction block a later `ROLLBACK` could undo: on the simple query
///    protocol a statement that starts its own (implicit) transaction has
///    `transaction_timestamp()` equal to `statement_timestamp()` to the
///    microsecond, as PostgreSQL copies one into the other when the
///    transaction starts, and both are taken once per message. Inside a
///    transaction block opened by an earlier `BEGIN`, the transaction's
///    start is that earlier message's, at least a client round trip
///    before, so the two differ. (On the extended protocol they differ even
///    in an implicit transaction, because Bind starts the transaction and
///    Execute restamps the statement; hence an SQL-level `PREPARE`, run
///    with `EXECUTE` in a simple-protocol query, so the server still plans
///    it only once.)
/// 2. Session state whose reset is costly but whose check is cheap: a role
///    or session authorization other than the login role, `LISTEN`
///    registrations, and a message whose implicit transaction began with
///    characteristics other than the session's defaults after the reset
///    (`SET SESSION CHARACTERISTICS` or `default_transaction_*` left by the
///    previous checkout: the message's transaction started before its
///    `RESET ALL` ran, and a unit's `BEGIN` appended to the message, see
///    `write_checkout_message`, turns that transaction into the unit's). Found,
///    the check refuses with a marker and the client sends
///    [`DIRTY_RESET`](super::hygiene::DIRTY_RESET) (which resets those
///    defaults too), then the checkout again.
/// 3. `pg_advisory_unlock_all()` and `setseed($1)` (`random()` reseeded
///    from a client-side random value, see [`write_seed`]), every time
///    (functions: no statement of their own).
/// 4. Diesel's connect-time settings, only on a connection whose start-up
///    options were dropped by a proxy.
/// 5. The schema `$2` exists and the login role may use it (`USAGE`): else
///    unqualified names would resolve to the shared schema instead. Both in
///    one catalog-cache look-up: `to_regnamespace` of the quoted name is
///    NULL for a missing schema, and `has_schema_privilege` of a NULL OID is
///    NULL, so `IS NOT TRUE` refuses both (an `EXISTS` over `pg_namespace`
///    plus `has_schema_privilege` by name cost ~2.7 µs more server time per
///    checkout, a fifth of the check: BENCHMARKS.md).
///
/// Every refusal raises by asking `current_setting` for a parameter named by
/// its marker, so nothing needs installing in the database. Functions and
/// operators are schema-qualified, so a user's `search_path` cannot shadow
/// them (`session_user` and `current_user` are keywords).
fn session_switch_body(facts: &ConnectFacts) -> String {
    let mut role = String::new();
    push_literal(&mut role, &facts.login_role);
    let reapply = if facts.startup_options_applied {
        ""
    } else {
        "WHEN pg_catalog.set_config('TimeZone', 'UTC', false) IS NULL THEN NULL \
         WHEN pg_catalog.set_config('client_encoding', 'UTF8', false) IS NULL THEN NULL "
    };
    format!(
        "SELECT CASE \
         WHEN pg_catalog.statement_timestamp() OPERATOR(pg_catalog.<>) pg_catalog.transaction_timestamp() \
         THEN pg_catalog.current_setting(E'{OPEN_TRANSACTION}') \
         WHEN session_user OPERATOR(pg_catalog.<>) {role}::pg_catalog.name \
           OR current_user OPERATOR(pg_catalog.<>) {role}::pg_catalog.name \
           OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) \
           OR {CHARACTERISTICS_CHANGED} \
         THEN pg_catalog.current_setting(E'{SESSION_DIRTY}') \
         WHEN pg_catalog.pg_advisory_unlock_all() IS NULL THEN NULL \
         WHEN pg_catalog.setseed($1::pg_catalog.float8 OPERATOR(pg_catalog./) {SEED_SCALE}) IS NULL THEN NULL \
         {reapply}\
         WHEN pg_catalog.has_schema_privilege(\
                pg_catalog.to_regnamespace(pg_catalog.quote_ident($2))::pg_catalog.oid, 'USAGE') \
              IS NOT TRUE \
         THEN pg_catalog.current_setting(E'{SCHEMA_MISSING}') \
         END"
    )
}

/// What [`CONNECT_QUERY`] reads of a new connection.
#[derive(Debug, QueryableByName)]
pub struct ConnectRow {
    /// `session_user` at connect.
    #[diesel(sql_type = Text)]
    pub login_role: String,
    /// `search_path` at connect (what the start-up options set, if they
    /// took effect).
    #[diesel(sql_type = Text)]
    pub search_path: String,
}

/// What a new connection is like, read before its switch is prepared (see
/// [`prepare_statement_sql`]).
pub const CONNECT_QUERY: &str = "SELECT session_user::pg_catalog.text AS login_role, \
     pg_catalog.current_setting('search_path') AS search_path";

/// The `PREPARE` of the session-level switch for a connection that
/// [`CONNECT_QUERY`] found like `row`, when its start-up options set
/// `default_path` (see `session_switch_body`). Run once per physical
/// connection, as a simple-protocol message.
pub fn prepare_statement_sql(row: ConnectRow, default_path: &str) -> String {
    let facts = ConnectFacts {
        startup_options_applied: row.search_path == default_path,
        login_role: row.login_role,
    };
    format!(
        "PREPARE {SWITCH_STATEMENT} (pg_catalog.int8, pg_catalog.text) AS {}",
        session_switch_body(&facts)
    )
}

/// Prepares, once per physical connection, the session-level switch that
/// [`SharedPool`](super::SharedPool) executes on every checkout (see
/// [`session_switch_body`]), after reading what the connection is like:
/// its login role, and whether its start-up options set `default_path`.
///
/// If user code deallocates the statement (`DEALLOCATE ALL`, `DISCARD ALL`),
/// the next checkout's `EXECUTE` fails and the connection is replaced.
pub(crate) fn prepare_session_switch(
    conn: &mut PgConnection,
    default_path: &str,
) -> QueryResult<()> {
    use diesel::connection::SimpleConnection;
    let row: ConnectRow = diesel::sql_query(CONNECT_QUERY).get_result(conn)?;
    conn.batch_execute(&prepare_statement_sql(row, default_path))
}

/// Writes into `out` (cleared first) one simple-protocol message: the
/// checkout's unconditional reset, the `EXECUTE` of the prepared check for
/// `first_schema`, then `SET search_path` to `path` (a list of quoted
/// identifiers, as [`SearchPath`] writes it). A `SET` that succeeds holds
/// exactly its value; one that fails fails the whole message.
///
/// The seed for `random()` is written as a placeholder, at a fixed place
/// (the `EXECUTE`'s first argument): the message names only the path, so
/// it can be kept and compared across checkouts; [`write_seed`] puts a
/// fresh seed in the copy that is sent.
pub fn write_session_switch(out: &mut String, path: &str, first_schema: &str) {
    out.clear();
    out.push_str(CHECKOUT_RESET);
    out.push_str("EXECUTE ");
    out.push_str(SWITCH_STATEMENT);
    out.push('(');
    debug_assert_eq!(out.len(), SEED_AT);
    out.push_str(SEED_PLACEHOLDER);
    out.push_str(", ");
    push_literal(out, first_schema);
    out.push_str("); SET search_path = ");
    out.push_str(path);
}

/// Why the session switch refused a connection.
#[derive(Debug)]
pub enum SessionRefusal {
    /// The path's first schema does not exist; the connection is fine (its
    /// implicit transaction, and with it the `SET`, was rolled back).
    SchemaMissing,
    /// The connection must not be used again.
    Broken(String),
    /// The statement failed for another reason (dead connection, aborted
    /// transaction, …); the connection must not be used again.
    Failed(diesel::result::Error),
}

/// Classifies the outcome of a checkout message ([`write_session_switch`])
/// or of a unit's message ending in [`write_local_switch`]'s check, run by
/// any client (the sync pools' `PgConnection` or an async one): the
/// switch's refusals are recognised by their markers.
pub fn classify(result: QueryResult<()>) -> Result<(), Refusal> {
    match result {
        Ok(()) => Ok(()),
        Err(diesel::result::Error::DatabaseError(kind, info)) => {
            let message = info.message();
            if message.contains(SCHEMA_MISSING) {
                Err(Refusal::SchemaMissing)
            } else if message.contains(SESSION_DIRTY) {
                Err(Refusal::Dirty)
            } else if message.contains(OPEN_TRANSACTION) {
                Err(Refusal::Broken(
                    "it was returned to the pool inside an open transaction block (a raw BEGIN \
                     without COMMIT or ROLLBACK); use Connection::transaction"
                        .to_string(),
                ))
            } else if message.contains(PATH_MISMATCH) {
                Err(Refusal::Broken(
                    "the server does not hold the search_path just set".to_string(),
                ))
            } else {
                Err(Refusal::Failed(diesel::result::Error::DatabaseError(
                    kind, info,
                )))
            }
        }
        Err(e) => Err(Refusal::Failed(e)),
    }
}

/// Where [`write_session_switch`] puts the seed placeholder.
const SEED_AT: usize = CHECKOUT_RESET.len() + "EXECUTE ".len() + SWITCH_STATEMENT.len() + 1;

/// The seed's width: 53 random bits as zero-padded decimal digits (an
/// integer literal; leading zeros are allowed), so a fresh one is written
/// over the placeholder in place.
const SEED_DIGITS: usize = 16;
const SEED_PLACEHOLDER: &str = "0000000000000000";

/// `2^53`: the seed divided by it is the `setseed()` argument, in `[0, 1)`.
const SEED_SCALE: &str = "9007199254740992.0";

/// 53 bits no tenant can predict, from the client: SipHash keyed by the
/// random keys the standard library draws from the operating system for
/// every thread (`RandomState`; each `new` gives other keys). No statement,
/// no server work but `setseed()` itself: the server's strong random source
/// (`gen_random_uuid()`) costs about 5 µs of server time per call.
fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8) >> 11
}

/// `seed` (below `2^53 < 10^16`) as [`SEED_DIGITS`] zero-padded decimal
/// digits, on the stack: the checkout writes it over its placeholder
/// without allocating.
fn seed_digits(mut seed: u64) -> [u8; SEED_DIGITS] {
    let mut digits = [b'0'; SEED_DIGITS];
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (seed % 10) as u8;
        seed /= 10;
    }
    digits
}

fn push_seed(out: &mut String, seed: u64) {
    out.push_str(std::str::from_utf8(&seed_digits(seed)).expect("ASCII digits"));
}

/// `random()` must not stay predictable: a `setseed()` one tenant left on
/// the session survives `RESET ALL` and `DISCARD ALL`, and would make the
/// next tenant's `random()` the sequence it chose. Writes into `out`
/// (cleared first) the checkout message `sql` (as [`write_session_switch`]
/// wrote it) with a fresh client-side seed in place of its placeholder; a
/// message of another form is copied as it is.
pub fn write_seed(out: &mut String, sql: &str) {
    out.clear();
    out.push_str(sql);
    let at = SEED_AT..SEED_AT + SEED_DIGITS;
    if sql.get(at.clone()) == Some(SEED_PLACEHOLDER) && sql.starts_with(CHECKOUT_RESET) {
        let digits = seed_digits(fresh_seed());
        out.replace_range(at, std::str::from_utf8(&digits).expect("ASCII digits"));
    }
}

/// True when the running transaction's characteristics differ from the
/// session's defaults (after the unit's `RESET ALL`, the connect-time
/// ones): a unit that began while an earlier one's `SET SESSION
/// CHARACTERISTICS` (or `set_config('default_transaction_…', …, false)`)
/// was in force. `BEGIN` fixed them before the reset ran, so the unit must
/// not run its work: it is refused as dirty, the defaults are reset in a
/// transaction of their own ([`DIRTY_UNLISTEN`](super::hygiene::DIRTY_UNLISTEN))
/// and the unit starts again. A hot standby runs every transaction read
/// only whatever the default.
const CHARACTERISTICS_CHANGED: &str = "(pg_catalog.current_setting('transaction_isolation') \
     OPERATOR(pg_catalog.<>) pg_catalog.current_setting('default_transaction_isolation') \
     OR pg_catalog.current_setting('transaction_deferrable') \
     OPERATOR(pg_catalog.<>) pg_catalog.current_setting('default_transaction_deferrable') \
     OR pg_catalog.current_setting('transaction_read_only')::pg_catalog.bool \
     OPERATOR(pg_catalog.<>) (pg_catalog.current_setting('default_transaction_read_only')::pg_catalog.bool \
     OR pg_catalog.pg_is_in_recovery()))";

/// Writes into `out` the check of a transaction-scoped unit: `SET LOCAL` of
/// `path` and the check of the server's value and of `first_schema`, a
/// reseed of `random()`, and a refusal with the dirty-session marker when
/// the session listens or the transaction did not begin with the default
/// characteristics, as one `SELECT` of literals (no prepared statement: behind a
/// transaction-pooling proxy each transaction may get another server
/// session). Raises with the same markers as the session switch.
pub fn write_local_switch(out: &mut String, path: &str, first_schema: &str) {
    let mut p = String::new();
    push_literal(&mut p, path);
    let mut f = String::new();
    push_literal(&mut f, first_schema);
    let mut seed = String::new();
    push_seed(&mut seed, fresh_seed());
    out.push_str(&format!(
        "SELECT CASE \
         WHEN EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) \
           OR {CHARACTERISTICS_CHANGED} \
         THEN pg_catalog.current_setting(E'{SESSION_DIRTY}') \
         WHEN pg_catalog.setseed({seed}::pg_catalog.float8 OPERATOR(pg_catalog./) {SEED_SCALE}) IS NULL THEN NULL \
         WHEN pg_catalog.set_config('search_path', {p}, true) OPERATOR(pg_catalog.<>) {p} \
         THEN pg_catalog.current_setting(E'{PATH_MISMATCH}') \
         WHEN (pg_catalog.current_schema() OPERATOR(pg_catalog.=) {f}) IS NOT TRUE \
         THEN pg_catalog.current_setting(E'{SCHEMA_MISSING}') \
         END"
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checkout message keeps a placeholder (it names the path only);
    /// the copy sent carries a fresh seed in its place, a different one
    /// each time.
    #[test]
    fn each_checkout_message_sent_carries_a_fresh_seed() {
        let mut sql = String::new();
        write_session_switch(&mut sql, r#""t0", "public""#, "t0");
        assert_eq!(&sql[SEED_AT..SEED_AT + SEED_DIGITS], SEED_PLACEHOLDER);
        let (mut a, mut b) = (String::new(), String::new());
        write_seed(&mut a, &sql);
        write_seed(&mut b, &sql);
        let seed = |m: &str| m[SEED_AT..SEED_AT + SEED_DIGITS].to_string();
        assert_ne!(seed(&a), seed(&b));
        assert!(seed(&a).parse::<u64>().unwrap() < 1 << 53);
        assert_eq!(a.replace(&seed(&a), SEED_PLACEHOLDER), sql);
    }

    #[test]
    fn seed_digits_are_the_seed_zero_padded() {
        for seed in [0, 7, 1234567890, (1 << 53) - 1] {
            assert_eq!(
                std::str::from_utf8(&seed_digits(seed)).unwrap(),
                format!("{seed:0SEED_DIGITS$}")
            );
        }
    }

    /// A marker must never name a parameter that can exist: built-in names
    /// have no spaces, custom ones need a dot. Nor may it need escaping.
    #[test]
    fn refusal_markers_name_no_possible_parameter() {
        for marker in [
            OPEN_TRANSACTION,
            SCHEMA_MISSING,
            PATH_MISMATCH,
            SESSION_DIRTY,
        ] {
            assert!(marker.contains(' '), "{marker}");
            assert!(!marker.contains(['.', '\'', '\\']), "{marker}");
        }
    }
}
