//! Reading one tenant in.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Text};

use super::copy::copy_in;
use super::error::TransferError;
use super::format::{corrupt, Record, RecordReader};
use super::{ImportOptions, Imported, TableTransfer};
use crate::name::{PublicName, SchemaName};
use crate::provision::create::{derived_candidate, insert_registry_rows, MAX_DERIVED_ATTEMPTS};
use crate::provision::migrations::{applied_shared_versions, IsolatedMigrations};
use crate::provision::template::ddl_pieces;
use crate::provision::util::{
    registry_conflict, schema_ddl, schema_script, BoolRow, InvalidateOnReturn,
};
use crate::provision::ProvisionError;
use crate::registry;
use crate::sqltok::join_schema;

/// What an export says before its data.
struct Header {
    public_name: PublicName,
    aliases: Vec<PublicName>,
    head: Option<String>,
    pre_data: String,
    post_data: String,
}

/// Creates the tenant written by [`super::export_tenant`] in the database
/// `conn` is connected to, in one transaction: its registry rows (under
/// `options`' public name, else the exported one with its aliases), its
/// schema (`options`' schema, else one derived from the public name) built
/// from the exported DDL, every table's rows (streamed with `COPY … FROM
/// STDIN`, never held in memory), its sequences' values, then its indexes,
/// constraints and triggers (after the rows, as `pg_restore` does: one
/// index build and one foreign-key check per constraint instead of one per
/// row). The exported tracking rows come along, so the tenant is at the
/// export's isolated head.
///
/// Refused before anything is written when the export's isolated head is
/// not `migrations`' ([`TransferError::HeadMismatch`]) or the database
/// lacks shared migrations ([`TransferError::TargetBehind`]). A damaged or
/// truncated export, a public name or schema taken or retired, or any
/// database error rolls everything back: the database is left as it was.
/// `progress` is called after each table.
///
/// An export is trusted input, like a `pg_dump` file: its DDL runs as the
/// connection's role. Import only exports you (or `appschema-cli export`)
/// wrote.
///
/// Called inside an open transaction, the work happens in a savepoint and
/// commits with the caller's transaction.
///
/// ```no_run
/// # use diesel::Connection;
/// # let migrations = appschema::MigrationSet::default(); // embedded at build time
/// use appschema::provision::{import_tenant, ImportOptions};
/// use appschema::PublicName;
/// let mut conn = diesel::PgConnection::establish("postgres:///other")?;
/// let file = std::io::BufReader::new(std::fs::File::open("acme.tenant")?);
/// let options = ImportOptions::new().public_name(PublicName::new("acme.eu.example.com")?);
/// let imported = import_tenant(&mut conn, &migrations, file, &options, |_| {})?;
/// println!("schema {}", imported.tenant.schema_name);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import_tenant<R: BufRead, M: IsolatedMigrations + ?Sized>(
    conn: &mut PgConnection,
    migrations: &M,
    input: R,
    options: &ImportOptions,
    mut progress: impl FnMut(&TableTransfer),
) -> Result<Imported, TransferError> {
    let _invalidate = InvalidateOnReturn;
    let mut reader = RecordReader::new(input)?;
    let (header, first) = read_header(&mut reader)?;
    let target = migrations.head();
    if header.head != target {
        let none = || "none".to_string();
        return Err(TransferError::HeadMismatch {
            export: header.head.unwrap_or_else(none),
            target: target.unwrap_or_else(none),
        });
    }
    let applied = applied_shared_versions(conn)?;
    let pending: Vec<String> = migrations
        .shared_versions()
        .into_iter()
        .filter(|v| !applied.contains(v))
        .collect();
    if let Some(first) = pending.first() {
        return Err(TransferError::TargetBehind {
            pending: pending.len(),
            first: first.clone(),
        });
    }
    conn.transaction(|conn| {
        let public = options
            .public_name
            .clone()
            .unwrap_or_else(|| header.public_name.clone());
        let schema = match &options.schema {
            Some(schema) => schema.clone(),
            None => free_derived_schema(conn, &public)?,
        };
        let tenant = insert_registry_rows(conn, &public, &schema)?;
        if public == header.public_name {
            for alias in &header.aliases {
                registry::add_alias(conn, &tenant, alias)
                    .map_err(|e| registry_conflict(e, alias.as_str(), schema.as_str()))?;
            }
        }
        let citus = crate::citus::is_citus(conn)?;
        replay(conn, &header.pre_data, &schema, true, citus)?;
        let mut tables = Vec::new();
        let mut next = first;
        while let Some(record) = next {
            match record.tag.as_str() {
                "table" => {
                    let (done, after) = load_table(conn, &mut reader, &schema, record.text()?)?;
                    progress(&done);
                    tables.push(done);
                    next = after;
                }
                "sequence" => {
                    set_sequence(conn, &mut reader, &schema, record.text()?)?;
                    next = reader.next()?;
                }
                other => return Err(corrupt(format!("unexpected `{other}` record"))),
            }
        }
        // The checksum was checked when `next` returned the end: only now
        // are the indexes, constraints and triggers built.
        replay(conn, &header.post_data, &schema, false, citus)?;
        options
            .hooks
            .run(conn, &tenant, crate::provision::HookStage::AfterCreate)?;
        Ok(Imported {
            tenant,
            tables,
            bytes: reader.bytes(),
        })
    })
}

fn read_header<R: BufRead>(
    reader: &mut RecordReader<R>,
) -> Result<(Header, Option<Record>), TransferError> {
    let mut public_name = None;
    let mut aliases = Vec::new();
    let mut head = None;
    let mut pre_data = None;
    let mut post_data = None;
    let first = loop {
        let Some(record) = reader.next()? else {
            break None;
        };
        let once = |taken: bool| match taken {
            true => Err(corrupt(format!("two `{}` records", record.tag))),
            false => Ok(()),
        };
        match record.tag.as_str() {
            "public_name" => {
                once(public_name.is_some())?;
                public_name = Some(PublicName::new(record.text()?)?);
            }
            "alias" => aliases.push(PublicName::new(record.text()?)?),
            // The source's schema and versions are for reading the file;
            // the versions come in with the tracking table's rows.
            "schema" | "version" => {}
            "head" => {
                once(head.is_some())?;
                head = Some(record.text()?.to_string());
            }
            "pre_data" => {
                once(pre_data.is_some())?;
                pre_data = Some(record.text()?.to_string());
            }
            "post_data" => {
                once(post_data.is_some())?;
                post_data = Some(record.text()?.to_string());
            }
            _ => break Some(record),
        }
    };
    let missing = |tag: &str| corrupt(format!("no `{tag}` record"));
    Ok((
        Header {
            public_name: public_name.ok_or_else(|| missing("public_name"))?,
            aliases,
            head,
            pre_data: pre_data.ok_or_else(|| missing("pre_data"))?,
            post_data: post_data.ok_or_else(|| missing("post_data"))?,
        },
        first,
    ))
}

/// Runs exported DDL (written with the placeholder) for `schema`. On Citus
/// the new schema is distributed and the DDL runs statement by statement
/// (see [`crate::citus::execute_script`]).
fn replay(
    conn: &mut PgConnection,
    body: &str,
    schema: &SchemaName,
    create_schema: bool,
    citus: bool,
) -> Result<(), TransferError> {
    let mut sql = join_schema(&ddl_pieces(body, create_schema)?, &schema.quoted());
    if !citus {
        return Ok(schema_ddl(conn, &sql, schema)?);
    }
    if create_schema {
        // `ddl_pieces` starts with `CREATE SCHEMA …;\n`.
        sql = crate::citus::distributing(&sql, schema);
    }
    Ok(schema_script(conn, &sql, schema, true)?)
}

/// Loads one table's rows: its `column` records, then `data` records into
/// one `COPY`, closed by a `rows` record that must match what the server
/// stored. Returns the record after them.
fn load_table<R: BufRead>(
    conn: &mut PgConnection,
    reader: &mut RecordReader<R>,
    schema: &SchemaName,
    table: &str,
) -> Result<(TableTransfer, Option<Record>), TransferError> {
    let mut columns = Vec::new();
    let first_data = loop {
        let record = reader.expect_next()?;
        if record.tag == "column" {
            columns.push(record.text()?.to_string());
        } else {
            break record;
        }
    };
    let start = reader.bytes();
    // diesel hands the COPY's writer to a `Fn`: the reader and what it
    // found go through cells.
    let reader = RefCell::new(reader);
    let pending = RefCell::new(Some(first_data));
    let expected = Cell::new(None::<u64>);
    let stored = copy_in(conn, schema, table, &columns, |sink: &mut dyn Write| loop {
        let record = match pending.borrow_mut().take() {
            Some(record) => record,
            None => reader.borrow_mut().expect_next()?,
        };
        match record.tag.as_str() {
            "data" => sink.write_all(&record.payload).map_err(TransferError::Io)?,
            "rows" => {
                let rows = record.text()?.parse::<u64>().map_err(|_| {
                    corrupt(format!("the row count of table `{table}` is not a number"))
                })?;
                expected.set(Some(rows));
                return Ok::<(), TransferError>(());
            }
            other => {
                return Err(corrupt(format!(
                    "unexpected `{other}` record in the rows of table `{table}`"
                )))
            }
        }
    })?;
    let reader = reader.into_inner();
    if expected.get() != Some(stored as u64) {
        return Err(corrupt(format!(
            "table `{table}` should hold {} rows but {stored} were read",
            expected.get().map_or("?".into(), |n| n.to_string())
        )));
    }
    let done = TableTransfer {
        table: table.to_string(),
        rows: stored as u64,
        bytes: reader.bytes() - start,
    };
    Ok((done, reader.next()?))
}

/// Sets sequence `name` from the `setval` record that follows it.
fn set_sequence<R: BufRead>(
    conn: &mut PgConnection,
    reader: &mut RecordReader<R>,
    schema: &SchemaName,
    name: &str,
) -> Result<(), TransferError> {
    let record = reader.expect_next()?;
    let bad = || {
        corrupt(format!(
            "the value of sequence `{name}` is not `<value> t|f`"
        ))
    };
    if record.tag != "setval" {
        return Err(bad());
    }
    let (value, called) = record.text()?.split_once(' ').ok_or_else(bad)?;
    let value = value.parse::<i64>().map_err(|_| bad())?;
    let called = match called {
        "t" => true,
        "f" => false,
        _ => return Err(bad()),
    };
    let sequence = format!("{}.{}", schema.quoted(), crate::name::quote_ident(name));
    diesel::sql_query("SELECT pg_catalog.setval($1::regclass, $2, $3)")
        .bind::<Text, _>(sequence)
        .bind::<BigInt, _>(value)
        .bind::<Bool, _>(called)
        .execute(conn)?;
    Ok(())
}

/// The first derived schema name (see [`crate::provision::derive_schema_name`])
/// that no schema, no tenant past or present and no role has. The insert
/// that follows still refuses one taken meanwhile.
fn free_derived_schema(
    conn: &mut PgConnection,
    public_name: &PublicName,
) -> Result<SchemaName, TransferError> {
    for n in 0..MAX_DERIVED_ATTEMPTS {
        let candidate = derived_candidate(public_name, n);
        let taken = diesel::sql_query(
            "SELECT EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = $1)
                 OR EXISTS (SELECT FROM public.appschema_schema_names WHERE schema_name = $1)
                 OR EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = $1) AS value",
        )
        .bind::<Text, _>(candidate.as_str())
        .get_result::<BoolRow>(conn)?
        .value;
        if !taken {
            return Ok(candidate);
        }
    }
    Err(ProvisionError::NoFreeSchemaName {
        public_name: public_name.to_string(),
    }
    .into())
}
