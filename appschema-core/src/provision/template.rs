//! Schema templates: the DDL of a freshly migrated scratch schema, with the
//! scratch schema's name replaced by a placeholder, stamped with the
//! migration version it matches, and the rows its migrations inserted (seed
//! rows) copied server-side from the **seed schema** the template names (see
//! [`super::seed`]: the rows are not in the template's text).
//! Replaying one is a single batch of SQL. Extensions are not part of it:
//! the migrations install them in the shared schema (see
//! [`crate::migrate`]), which a template's tables reference by name.
//!
//! Why `pg_dump` rather than reading the catalogs ourselves: pg_dump already
//! writes every kind of object (sequences and their ownership, identity
//! columns, defaults, constraints, indexes, triggers, functions, types,
//! views, comments, privileges) in an order that replays, and keeps up with
//! each PostgreSQL release; re-implementing it from `pg_catalog` would be
//! large and always a release behind. The price is needing the binary when a
//! template is generated (never when one is replayed), and cleaning its
//! output: its session `SET`s and `set_config` calls are dropped (they would
//! outlive the transaction on a pooled connection), as are comments, psql
//! meta-commands and its `CREATE SCHEMA`.

use std::fmt;
use std::sync::{Arc, Mutex};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, Nullable, Text};

use super::error::{ProvisionError, TemplateError};
use super::migrations::{explain_failure, migrate_new_schema, IsolatedMigrations};
use super::pg_dump::dump_schema_with;
use super::util::schema_ddl;
use crate::name::SchemaName;
use crate::sqltok::{self, ident_is, join_schema, split_schema, Kind, Piece};

/// The identifier standing for the tenant's schema in a template's SQL.
pub const TEMPLATE_PLACEHOLDER: &str = "__appschema_schema__";

const MAGIC: &str = "-- appschema schema template";

/// pg_dump writes functions before the tables a `LANGUAGE sql` body may
/// name, and turns `check_function_bodies` off for its script; the
/// cleaned template drops pg_dump's session `SET`s, so its replay turns the
/// check off itself, for the transaction only (`set_config(…, true)`), and
/// afterwards puts back the value the transaction had.
const CHECK_FUNCTION_BODIES_OFF: &str =
    "SELECT pg_catalog.set_config('appschema.check_function_bodies', \
     pg_catalog.current_setting('check_function_bodies'), true), \
     pg_catalog.set_config('check_function_bodies', 'off', true);\n";

/// Restores what [`CHECK_FUNCTION_BODIES_OFF`] saved.
const CHECK_FUNCTION_BODIES_RESTORED: &str =
    "SELECT pg_catalog.set_config('check_function_bodies', \
     pg_catalog.current_setting('appschema.check_function_bodies'), true);\n";

/// A schema template: the isolated schema's DDL for one migration version.
/// Its text form ([`fmt::Display`], [`Template::parse`]) is what
/// `appschema-cli schematemplate` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    version: String,
    versions: Vec<String>,
    /// The schema the seed rows are copied from, when the migrations
    /// insert any.
    seed: Option<SchemaName>,
    body: String,
    /// What [`Template::sql_for`] sends, cut where the schema's name goes:
    /// `CREATE SCHEMA`, the body, the tracking rows.
    replay: Vec<Piece>,
}

impl Template {
    /// The isolated migration version this template matches.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Every isolated migration version recorded in a schema built from it.
    pub fn versions(&self) -> &[String] {
        &self.versions
    }

    /// The seed schema the replay copies the seed rows from (`None` when
    /// the migrations insert no rows); see the README's schema template
    /// section.
    pub fn seed_schema(&self) -> Option<&SchemaName> {
        self.seed.as_ref()
    }

    /// Reads a template's text form.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let malformed = |why: &str| TemplateError::Malformed(why.to_string());
        let mut lines = text.splitn(5, '\n');
        if lines.next().map(str::trim_end) != Some(MAGIC) {
            return Err(malformed(
                "the first line must be `-- appschema schema template`",
            ));
        }
        let mut field = |name: &str| -> Result<String, TemplateError> {
            lines
                .next()
                .and_then(|l| l.strip_prefix(&format!("-- {name}:")))
                .map(|v| v.trim().to_string())
                .ok_or_else(|| malformed(&format!("missing `-- {name}:` header line")))
        };
        let version = field("version")?;
        let versions: Vec<String> = field("versions")?
            .split_whitespace()
            .map(String::from)
            .collect();
        let placeholder = field("placeholder")?;
        let rest = lines.next().unwrap_or_default();
        if placeholder != TEMPLATE_PLACEHOLDER {
            return Err(malformed("unknown placeholder"));
        }
        // The seed line is optional: a template whose migrations insert no
        // rows has none, nor does one written before seed schemas, whose
        // rows are `INSERT`s in its body.
        let (seed, body) = match rest.strip_prefix("-- seed:") {
            Some(after) => {
                let (name, body) = after.split_once('\n').unwrap_or((after, ""));
                let seed = SchemaName::internal(name.trim())
                    .ok()
                    .filter(|s| s.as_str().starts_with(super::seed::SEED_PREFIX))
                    .ok_or_else(|| malformed("the seed schema must be named appschema_seed_…"))?;
                (Some(seed), body)
            }
            None => (None, rest),
        };
        Self::from_parts(version, versions, seed, body.to_string())
    }

    fn from_parts(
        version: String,
        versions: Vec<String>,
        seed: Option<SchemaName>,
        body: String,
    ) -> Result<Template, TemplateError> {
        let plain = |v: &String| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !plain(&version) || !versions.iter().all(plain) {
            return Err(TemplateError::Malformed(
                "versions must be ASCII letters, digits, `_` and `-`".into(),
            ));
        }
        if versions.last() != Some(&version) {
            return Err(TemplateError::Malformed(
                "the version must be the last of the versions".into(),
            ));
        }
        let mut replay = ddl_pieces(&body, true)?;
        if let Some(seed) = &seed {
            // Right after `CREATE SCHEMA …;` (which `ddl_pieces` starts
            // with, and which Citus's distribution follows): before any
            // other work, a missing seed schema stops the replay.
            replay.insert(3, Piece::Text(super::seed::guard_sql(seed)));
        }
        replay.push(Piece::Text("INSERT INTO ".into()));
        replay.push(Piece::Schema);
        let rows: Vec<String> = versions.iter().map(|v| format!("('{v}')")).collect();
        replay.push(Piece::Text(format!(
            ".__diesel_schema_migrations (version) VALUES {};\n",
            rows.join(", ")
        )));
        Ok(Template {
            version,
            versions,
            seed,
            body,
            replay,
        })
    }

    /// Builds a template from pg_dump's pre-data and post-data sections for
    /// schema `scratch` and, between them, `rows` (see
    /// [`super::seed::seed_sql`]), copying from `seed` when it is given.
    pub(crate) fn from_sections(
        pre_data: &str,
        rows: &str,
        post_data: &str,
        scratch: &SchemaName,
        seed: Option<SchemaName>,
        versions: Vec<String>,
    ) -> Result<Template, TemplateError> {
        let mut body = portable_ddl(pre_data, scratch)?;
        body.push_str(rows);
        body.push_str(&portable_ddl(post_data, scratch)?);
        let version = versions
            .last()
            .cloned()
            .ok_or(TemplateError::NoMigrations)?;
        Self::from_parts(version, versions, seed, body)
    }

    /// The SQL building schema `schema` from this template: `CREATE SCHEMA`,
    /// the DDL, and the rows of `__diesel_schema_migrations`.
    pub fn sql_for(&self, schema: &SchemaName) -> String {
        join_schema(&self.replay, &schema.quoted())
    }

    /// The statement recording `schema`'s head (see the `heads` module of
    /// [`crate::migrate`]): the versions the replay inserts into its
    /// tracking table, so `migrate` trusts the new schema without reading
    /// it. Runs in the replay's transaction: it commits, or rolls back, with
    /// the rows it describes.
    fn record_sql(&self, schema: &SchemaName) -> String {
        // The digest's order (byte order), whatever the template's.
        let versions: std::collections::BTreeSet<&String> = self.versions.iter().collect();
        let record = crate::migrate::heads::Record::holding(schema.as_str(), versions);
        crate::migrate::heads::upsert_sql(&[record])
            .map(|sql| format!("{sql};\n"))
            .unwrap_or_default()
    }

    /// Replays the template as `schema` in the open transaction.
    pub(crate) fn replay(
        &self,
        conn: &mut PgConnection,
        schema: &SchemaName,
    ) -> Result<(), ProvisionError> {
        let target = ReplayTarget::read(conn)?;
        self.replay_on(conn, schema, target)
    }

    /// [`Template::replay`] when the caller has read the [`ReplayTarget`]
    /// (with other work): on Citus, statement by statement (see
    /// [`crate::citus::execute_script`]); where appschema records heads,
    /// the new schema's head is recorded in the same batch.
    pub(crate) fn replay_on(
        &self,
        conn: &mut PgConnection,
        schema: &SchemaName,
        target: ReplayTarget,
    ) -> Result<(), ProvisionError> {
        let mut sql = self.sql_for(schema);
        if target.heads {
            sql.push_str(&self.record_sql(schema));
        }
        let result = if !target.citus {
            schema_ddl(conn, &sql, schema)
        } else {
            // A distributed schema: its tables are created distributed, each
            // statement on its own.
            let sql = crate::citus::distributing(&sql, schema);
            super::util::schema_script(conn, &sql, schema, true)
        };
        match &self.seed {
            Some(seed) => result.map_err(|e| super::seed::explain_missing(e, &self.version, seed)),
            None => result,
        }
    }
}

/// What a replay needs to know about the database it runs in.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub(crate) struct ReplayTarget {
    /// The database is a Citus coordinator (the replay goes statement by
    /// statement).
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(crate) citus: bool,
    /// appschema's table of recorded heads exists (a database whose
    /// appschema tables predate it has none), so the replay records the new
    /// schema's head.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(crate) heads: bool,
}

impl ReplayTarget {
    /// The SQL selecting the two flags as `citus` and `heads`, to ride in
    /// another query.
    pub(crate) const COLUMNS: &'static str =
        "EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') AS citus, \
         pg_catalog.to_regclass('public.appschema_heads') IS NOT NULL AS heads";

    fn read(conn: &mut PgConnection) -> QueryResult<ReplayTarget> {
        diesel::sql_query(format!("SELECT {}", Self::COLUMNS)).get_result(conn)
    }
}

/// pg_dump's output for `schema`, cleaned (its session `SET`s, `set_config`
/// calls, comments, psql meta-commands and the schema's own `CREATE` /
/// `ALTER SCHEMA` dropped) with `schema`'s name replaced by
/// [`TEMPLATE_PLACEHOLDER`]: DDL that builds the same objects in any schema
/// (see [`ddl_pieces`]).
pub(crate) fn portable_ddl(dump: &str, schema: &SchemaName) -> Result<String, TemplateError> {
    let scratch = schema;
    let tokens = sqltok::tokenize(dump).map_err(TemplateError::Sql)?;
    if tokens.iter().any(|t| ident_is(t, TEMPLATE_PLACEHOLDER)) {
        return Err(TemplateError::Malformed(format!(
            "the schema uses the identifier {TEMPLATE_PLACEHOLDER}, which templates reserve"
        )));
    }
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut words: Vec<String> = Vec::new();
    for token in &tokens {
        match token.kind {
            Kind::LineComment | Kind::BlockComment | Kind::PsqlMeta => current.push(' '),
            Kind::Other if token.text == ";" => {
                if keep_statement(&words, scratch) {
                    statements.push(current.trim().to_string());
                }
                current.clear();
                words.clear();
            }
            _ => {
                if words.len() < 3 && matches!(token.kind, Kind::Ident | Kind::QuotedIdent) {
                    words.push(token.text.to_ascii_lowercase());
                }
                current.push_str(token.text);
                // pg_dump's `setval('schema.seq', …)` names the sequence in
                // a text literal: cast to regclass, so the schema's name in
                // it is replaced like any other.
                if token.kind == Kind::Str && is_setval(&words) && !current.contains("::regclass") {
                    current.push_str("::regclass");
                }
            }
        }
    }
    if !current.trim().is_empty() {
        return Err(TemplateError::Sql(
            "pg_dump's output ends inside a statement".into(),
        ));
    }
    let mut cleaned = String::new();
    for statement in statements {
        cleaned.push_str(&statement);
        cleaned.push_str(";\n");
    }
    let pieces = split_schema(&cleaned, scratch.as_str()).map_err(TemplateError::Sql)?;
    Ok(join_schema(&pieces, TEMPLATE_PLACEHOLDER))
}

/// The pieces of SQL replaying `body` (DDL written with
/// [`TEMPLATE_PLACEHOLDER`] for the schema), `CREATE SCHEMA` first when
/// `create_schema`, with `check_function_bodies` off for the DDL only.
pub(crate) fn ddl_pieces(body: &str, create_schema: bool) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    if create_schema {
        pieces.push(Piece::Text("CREATE SCHEMA ".into()));
        pieces.push(Piece::Schema);
        pieces.push(Piece::Text(";\n".into()));
    }
    pieces.push(Piece::Text(CHECK_FUNCTION_BODIES_OFF.into()));
    pieces.extend(split_schema(body, TEMPLATE_PLACEHOLDER).map_err(TemplateError::Sql)?);
    pieces.push(Piece::Text(CHECK_FUNCTION_BODIES_RESTORED.into()));
    Ok(pieces)
}

/// Whether the statement's first words are `SELECT pg_catalog.setval`.
fn is_setval(words: &[String]) -> bool {
    words == ["select", "pg_catalog", "setval"]
}

fn keep_statement(words: &[String], scratch: &SchemaName) -> bool {
    let w = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let names_scratch = w(2).trim_matches('"') == scratch.as_str();
    !(w(0) == "set"
        || (w(0) == "select" && w(1) == "pg_catalog" && !is_setval(words))
        || (w(0) == "create" && w(1) == "schema" && names_scratch)
        || (w(0) == "alter" && w(1) == "schema" && names_scratch)
        || words.is_empty())
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{MAGIC}")?;
        writeln!(f, "-- version: {}", self.version)?;
        writeln!(f, "-- versions: {}", self.versions.join(" "))?;
        writeln!(f, "-- placeholder: {TEMPLATE_PLACEHOLDER}")?;
        if let Some(seed) = &self.seed {
            writeln!(f, "-- seed: {seed}")?;
        }
        f.write_str(&self.body)
    }
}

/// Generates the template of the isolated schema at the current head: builds
/// it in a fresh schema (`appschema_seed_…`, committed so pg_dump can see
/// it), dumps its DDL with pg_dump (see [`super::find_pg_dump`]), replaces
/// its name by [`TEMPLATE_PLACEHOLDER`], and keeps it as the template's seed
/// schema when its migrations inserted rows (dropped otherwise; the
/// replay copies the rows from it server-side, see the README's schema
/// template section). `database_url` must name the database `conn` is
/// connected to. The seed rows never reach this process.
pub fn generate_template<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    database_url: &str,
    migrations: &M,
) -> Result<Template, ProvisionError> {
    if migrations.head().is_none() {
        return Err(TemplateError::NoMigrations.into());
    }
    let scratch = super::seed::new_seed_name()?;
    conn.transaction(|conn| migrate_new_schema(conn, migrations, &scratch))
        .map_err(|e| explain_failure(conn, migrations, e))?;
    let built = template_of(conn, database_url, migrations, &scratch);
    let keep = matches!(&built, Ok(t) if t.seed.is_some());
    let cleanup = if keep {
        // The template writes its own tracking rows; without its tracking
        // table nothing takes the seed schema for a schema at a version.
        format!("DROP TABLE {}.__diesel_schema_migrations", scratch.quoted())
    } else {
        format!("DROP SCHEMA IF EXISTS {} CASCADE", scratch.quoted())
    };
    conn.batch_execute(&cleanup)?;
    built
}

/// The template of `scratch`, freshly migrated: pg_dump's pre-data section
/// (tables, sequences, functions, types), the seed rows' copies and the
/// sequences' values, then its post-data section (indexes, constraints,
/// triggers, the `REFRESH` of populated materialized views): pg_dump's
/// order, so neither foreign keys nor the application's triggers see the
/// rows arrive.
fn template_of<M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    database_url: &str,
    migrations: &M,
    scratch: &SchemaName,
) -> Result<Template, ProvisionError> {
    let pre_data = dump_schema_with(database_url, scratch.as_str(), &["--section=pre-data"])?;
    let post_data = dump_schema_with(database_url, scratch.as_str(), &["--section=post-data"])?;
    let (rows, has_rows) = super::seed::seed_sql(conn, scratch)?;
    Ok(Template::from_sections(
        &pre_data,
        &rows,
        &post_data,
        scratch,
        has_rows.then(|| scratch.clone()),
        migrations.versions(),
    )?)
}

/// Stores `template` in `public.appschema_templates`, replacing any for the
/// same version; [`super::Source::Template`] replays it from there. In the
/// same transaction, the seed schemas the stored templates named before
/// (a replaced template's, an older version's) are dropped: only
/// `template`'s is kept.
pub fn store_template(conn: &mut PgConnection, template: &Template) -> QueryResult<()> {
    conn.transaction(|conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('appschema.templates'))")
            .execute(conn)?;
        // Before any seed schema goes: wait for the replays that read a
        // stored template (`FOR SHARE`, see `stored_template_sql`) to end.
        diesel::sql_query("SELECT 1 FROM public.appschema_templates FOR UPDATE").execute(conn)?;
        super::seed::drop_named_seeds_except(conn, template.seed.as_ref())?;
        diesel::sql_query(
            "INSERT INTO public.appschema_templates (version, body) VALUES ($1, $2)
             ON CONFLICT (version) DO UPDATE SET body = excluded.body, created_at = now()",
        )
        .bind::<Text, _>(&template.version)
        .bind::<Text, _>(template.to_string())
        .execute(conn)
        .map(drop)
    })
}

/// Parsed templates, shared by every connection of the process: replaying a
/// template needs neither its body sent again nor parsing it again. Keyed by
/// the stored version *and* the md5 of the stored body, which the query
/// fetching a template always returns (the body itself only when its md5 is
/// not cached): a template regenerated under the same version, or another
/// database's, is never served from the cache, and checking costs no round
/// trip.
static CACHE: Mutex<Vec<Cached>> = Mutex::new(Vec::new());

/// How many parsed templates the cache keeps (the oldest goes first).
const CACHE_CAPACITY: usize = 16;

struct Cached {
    version: String,
    digest: String,
    template: Arc<Template>,
}

fn cache() -> std::sync::MutexGuard<'static, Vec<Cached>> {
    // The cache holds no invariant a panicking holder could break.
    CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The md5 digests of the cached templates for `version`.
pub(crate) fn cached_digests(version: &str) -> Vec<String> {
    cache()
        .iter()
        .filter(|c| c.version == version)
        .map(|c| c.digest.clone())
        .collect()
}

fn cache_get(version: &str, digest: &str) -> Option<Arc<Template>> {
    cache()
        .iter()
        .find(|c| c.version == version && c.digest == digest)
        .map(|c| c.template.clone())
}

fn cache_put(version: &str, digest: &str, template: Arc<Template>) {
    let mut cache = cache();
    cache.retain(|c| !(c.version == version && c.digest == digest));
    if cache.len() >= CACHE_CAPACITY {
        cache.remove(0);
    }
    cache.push(Cached {
        version: version.to_string(),
        digest: digest.to_string(),
        template,
    });
}

/// The SQL, selecting `digest` and `body` (null when `digest` is among the
/// text array `${known}`), of the template stored for version `${version}`.
///
/// The row is read `FOR SHARE`: the seed schema the template names must
/// outlive the transaction that replays it. [`store_template`] first locks
/// every stored row `FOR UPDATE`, so it waits for replays that have read a
/// template to commit before it drops the seed schema that template named,
/// and a replay that reads the row while a store is under way waits for it
/// and reads the new template (whose seed schema exists). The order — rows
/// first, seed schemas after — is what keeps the two from deadlocking.
pub(crate) fn stored_template_sql(version: usize, known: usize) -> String {
    format!(
        "SELECT digest, CASE WHEN digest = ANY(${known}) THEN NULL ELSE body END AS body
           FROM (SELECT md5(body) AS digest, body FROM public.appschema_templates
                  WHERE version = ${version} FOR SHARE) stored"
    )
}

/// The template stored for `head` with body md5 `digest`: `body` parsed when
/// the query sent it, else the cached one (fetched again in the rare case
/// another thread evicted it meanwhile).
pub(crate) fn resolve_stored(
    conn: &mut PgConnection,
    head: &str,
    digest: &str,
    body: Option<String>,
) -> Result<Arc<Template>, ProvisionError> {
    let (digest, body) = match body {
        Some(body) => (digest.to_string(), body),
        None => match cache_get(head, digest) {
            Some(template) => return Ok(template),
            None => match fetch_stored(conn, head, &[])? {
                Some((digest, Some(body))) => (digest, body),
                _ => return Err(stale_or_missing(conn, head)),
            },
        },
    };
    let template = Template::parse(&body)?;
    if template.version != head {
        return Err(TemplateError::Malformed(format!(
            "the template stored as version {head} says it is version {}",
            template.version
        ))
        .into());
    }
    let template = Arc::new(template);
    cache_put(head, &digest, template.clone());
    Ok(template)
}

#[derive(QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = Text)]
    digest: String,
    #[diesel(sql_type = Nullable<Text>)]
    body: Option<String>,
}

fn fetch_stored(
    conn: &mut PgConnection,
    head: &str,
    known: &[String],
) -> QueryResult<Option<(String, Option<String>)>> {
    Ok(diesel::sql_query(stored_template_sql(1, 2))
        .bind::<Text, _>(head)
        .bind::<Array<Text>, _>(known)
        .get_result::<StoredRow>(conn)
        .optional()?
        .map(|r| (r.digest, r.body)))
}

/// Why there is no template for `head`: [`TemplateError::Stale`] naming the
/// newest stored one, or [`TemplateError::Missing`].
pub(crate) fn stale_or_missing(conn: &mut PgConnection, head: &str) -> ProvisionError {
    let newest = diesel::sql_query(
        "SELECT version AS value FROM public.appschema_templates ORDER BY created_at DESC LIMIT 1",
    )
    .get_result::<super::util::TextRow>(conn)
    .optional();
    match newest {
        Ok(Some(row)) => TemplateError::Stale {
            template: row.value,
            head: head.to_string(),
        }
        .into(),
        Ok(None) => TemplateError::Missing {
            head: head.to_string(),
        }
        .into(),
        Err(e) => e.into(),
    }
}

/// The stored template for `head`; refused with [`TemplateError::Stale`]
/// when only older ones are stored, [`TemplateError::Missing`] when none is.
pub fn load_template(conn: &mut PgConnection, head: &str) -> Result<Template, ProvisionError> {
    match load_current(conn, head)? {
        Some(template) => Ok(Template::clone(&template)),
        None => Err(stale_or_missing(conn, head)),
    }
}

/// The stored template for `head`, if there is one (from the cache when the
/// stored body is the cached one).
pub(crate) fn load_current(
    conn: &mut PgConnection,
    head: &str,
) -> Result<Option<Arc<Template>>, ProvisionError> {
    match fetch_stored(conn, head, &cached_digests(head))? {
        Some((digest, body)) => resolve_stored(conn, head, &digest, body).map(Some),
        None => Ok(None),
    }
}

/// Checks a template read from elsewhere (a file) against the head.
pub(crate) fn check_current(template: &Template, head: &str) -> Result<(), TemplateError> {
    if template.version != head {
        return Err(TemplateError::Stale {
            template: template.version.clone(),
            head: head.to_string(),
        });
    }
    Ok(())
}
