//! Reading which versions each schema has applied: a few queries, never one
//! per schema per migration.
//!
//! Reading a tracking table is per-relation work for the server (lock, plan,
//! scan: ~0.1 ms per schema on PostgreSQL 15, warm or cold), so at 10,000
//! tenants the read alone takes about a second on one connection. `status`
//! and `plan` read everything first ([`read_all`]); `migrate` streams the
//! read ([`Applied`]): reader connections send chunk after chunk while the
//! workers already apply what the first chunks showed pending, so the read
//! overlaps the migration instead of preceding it.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::apply::quote_literal;
use super::heads;
use super::{MigrateError, TRACKING_TABLE};
use crate::name::quote_ident;

/// Schemas read per query. Measured on PostgreSQL 15 (3,000 schemas, fresh
/// backend): a `UNION ALL` of 1,000 tracking tables costs ~0.5 ms per
/// schema, of 200 ~0.5 ms, of 50 ~0.15 ms, of 10 ~0.19 ms: planning a wide
/// `UNION ALL` grows faster than its width, and narrow ones pay a round trip
/// each.
pub(super) const CHUNK: usize = 50;

/// Chunks each extra reader connection must have to be worth opening.
pub(super) const CHUNKS_PER_READER: usize = 8;

/// One schema's applied versions.
pub(super) type Versions = BTreeSet<String>;

/// What a reader sends: one chunk's schemas with their versions, or why it
/// stopped.
type Chunk = Result<Vec<(String, Versions)>, MigrateError>;

/// Reads the applied versions of `schemas` (each has a tracking table) in
/// one query.
pub(super) fn read_chunk(
    conn: &mut PgConnection,
    schemas: &[&str],
) -> QueryResult<Vec<(String, Versions)>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        schema_name: String,
        #[diesel(sql_type = Text)]
        versions: String,
    }
    let sql = schemas
        .iter()
        .map(|s| {
            format!(
                "SELECT {} AS schema_name, coalesce(string_agg(version, ','), '') AS versions FROM {}.{TRACKING_TABLE}",
                quote_literal(s),
                quote_ident(s)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    Ok(diesel::sql_query(sql)
        .load::<Row>(conn)?
        .into_iter()
        .map(|r| {
            let versions = r
                .versions
                .split(',')
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect();
            (r.schema_name, versions)
        })
        .collect())
}

/// How many reader connections to open for `chunks` chunks, at most `max`.
pub(super) fn readers_for(chunks: usize, max: usize) -> usize {
    if chunks == 0 {
        0
    } else {
        max.min(chunks / CHUNKS_PER_READER).max(1)
    }
}

/// Starts `readers` threads in `scope`, each on its own connection from
/// `connect`; reader `i` reads chunks `i`, `i + readers`, … and sends each
/// as soon as it is read. With `heal` (tracking tables' OIDs and the set's
/// isolated versions), a reader also records the heads of the chunk's
/// schemas found complete ([`heads::heal`]) once it has sent it: those no
/// worker of this run will touch (the others record their heads as they are
/// migrated, and a record written from an older read would only hold them
/// back). A reader stops at its first error (sent as the last item) or when
/// the receiver is dropped.
pub(super) fn spawn_readers<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    connect: &'env (dyn Fn() -> Result<PgConnection, MigrateError> + Sync),
    chunks: &'env [&'env [&'env str]],
    readers: usize,
    heal: Option<(&'env HashMap<String, i64>, &'env Versions)>,
) -> Receiver<Chunk> {
    // A few chunks of slack so readers do not wait on a busy consumer.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(4 * readers.max(1));
    for first in 0..readers {
        let tx: SyncSender<Chunk> = tx.clone();
        scope.spawn(move || {
            let mut conn = match connect() {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            for chunk in chunks.iter().skip(first).step_by(readers) {
                let read = read_chunk(&mut conn, chunk).map_err(MigrateError::from);
                let healing = match (&read, heal) {
                    (Ok(rows), Some((oids, expected))) => {
                        let complete: Vec<(String, Versions)> = rows
                            .iter()
                            .filter(|(_, versions)| versions == expected)
                            .cloned()
                            .collect();
                        Some((complete, oids))
                    }
                    _ => None,
                };
                let failed = read.is_err();
                if tx.send(read).is_err() || failed {
                    return;
                }
                if let Some((rows, oids)) = healing {
                    if let Err(e) = heads::heal(&mut conn, &rows, oids) {
                        let _ = tx.send(Err(e.into()));
                        return;
                    }
                }
            }
        });
    }
    rx
}

/// The applied versions known so far, and the stream of the rest.
pub(super) struct Applied {
    known: HashMap<String, Versions>,
    tracked: BTreeSet<String>,
    /// Schemas whose recorded head says they hold exactly `expected`.
    current: BTreeSet<String>,
    /// The set's isolated versions.
    expected: Arc<Versions>,
    rx: Option<Receiver<Chunk>>,
    unread: usize,
}

impl Applied {
    /// `unread` schemas (all tracked) will arrive from `rx`; `known` holds
    /// what was read already; the schemas of `current` hold `expected`
    /// (their recorded heads say so) and are not read.
    pub(super) fn new(
        tracked: BTreeSet<String>,
        known: HashMap<String, Versions>,
        (current, expected): (BTreeSet<String>, Arc<Versions>),
        rx: Receiver<Chunk>,
        unread: usize,
    ) -> Applied {
        Applied {
            known,
            tracked,
            current,
            expected,
            rx: (unread > 0).then_some(rx),
            unread,
        }
    }

    /// Whether the schema had a tracking table when the run started.
    pub(super) fn is_tracked(&self, schema: &str) -> bool {
        self.tracked.contains(schema)
    }

    /// The schema's versions, if known (`None` for an untracked schema, or
    /// a tracked one still to come).
    pub(super) fn get(&self, schema: &str) -> Option<&Versions> {
        if self.current.contains(schema) {
            return Some(&self.expected);
        }
        self.known.get(schema)
    }

    /// Tracked schemas whose versions have not arrived yet.
    pub(super) fn unread(&self) -> usize {
        self.unread
    }

    /// Waits for the next chunk, records it and returns its schemas; `None`
    /// once everything has arrived.
    pub(super) fn next_chunk(&mut self) -> Result<Option<Vec<String>>, MigrateError> {
        let Some(rx) = &self.rx else {
            return Ok(None);
        };
        match rx.recv() {
            Ok(chunk) => {
                let chunk = chunk.inspect_err(|_| self.rx = None)?;
                self.unread = self.unread.saturating_sub(chunk.len());
                if self.unread == 0 {
                    self.rx = None;
                }
                let names = chunk.iter().map(|(s, _)| s.clone()).collect();
                self.known.extend(chunk);
                Ok(Some(names))
            }
            // Every reader hung up without sending everything: cannot happen
            // unless a reader panicked.
            Err(_) => {
                self.rx = None;
                Err(MigrateError::ReadInterrupted(self.unread))
            }
        }
    }

    /// Waits for everything and returns every schema's versions (read, or
    /// known from its recorded head).
    pub(super) fn finish(mut self) -> Result<HashMap<String, Versions>, MigrateError> {
        while self.next_chunk()?.is_some() {}
        for schema in std::mem::take(&mut self.current) {
            self.known.insert(schema, (*self.expected).clone());
        }
        Ok(self.known)
    }
}
