//! Row streams that cannot outlive their connection, and whose connection
//! is never reused when they are dropped before their end.
//!
//! diesel-async's own `load_stream` returns a stream that does not borrow
//! the connection (`BoxStream<'static>`), and nothing tells the connection
//! when a stream is dropped half-read: the connection goes back to the pool
//! with the statement still running on the server. No pool can see that
//! from outside the stream; the async pools only see its effect, a checkout
//! whose switch gets no answer within `busy_timeout`, and then cancel the
//! statement and close the connection (the statement runs until then,
//! writes included). So appschema offers a stream of its own, whose drop is
//! seen at once: [`load_stream`].

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use appschema_core::connection::internals::PlanWatch;
use diesel::QueryResult;
use diesel_async::methods::LoadQuery;
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::Stream;

/// Runs `query` on `conn` and returns its rows as a stream that borrows the
/// connection: the guarded twin of diesel-async's `RunQueryDsl::load_stream`
/// (which returns a stream that may outlive the connection's return to the
/// pool).
///
/// On a connection of the async pools (an [`AsyncTenantConnection`], or the
/// connection a transaction-scoped unit is given), a stream dropped before
/// its last row marks the connection: it is then never handed to another
/// checkout. When it is returned, the server is sent a cancel request for
/// the statement and the connection is closed; a transaction-scoped unit
/// cancels the statement and rolls back instead of committing, and fails
/// with [`ConnectionError::StreamAbandoned`]. Queries run on the same
/// connection after the stream was dropped wait for the statement to end.
///
/// [`AsyncTenantConnection`]: crate::AsyncTenantConnection
/// [`ConnectionError::StreamAbandoned`]: appschema_core::ConnectionError::StreamAbandoned
///
/// ```no_run
/// use appschema::{SchemaName, async_pool::{load_stream, AsyncSharedPool}};
/// use diesel::sql_types::Text;
/// use futures_util::TryStreamExt;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = AsyncSharedPool::builder("postgres:///app").build()?;
/// let mut conn = pool.get_for(&SchemaName::new("acme")?).await?;
/// let query = diesel::dsl::sql::<Text>("SELECT marker FROM items");
/// let mut rows = load_stream::<_, String>(&mut conn, diesel::select(query)).await?;
/// while let Some(marker) = rows.try_next().await? {
///     println!("{marker}");
/// }
/// # Ok(())
/// # }
/// ```
pub async fn load_stream<'conn, 'query, Q, U>(
    conn: &'conn mut AsyncPgConnection,
    query: Q,
) -> QueryResult<TenantRowStream<'conn, Q::Stream<'conn>>>
where
    Q: LoadQuery<'query, AsyncPgConnection, U> + 'query,
{
    let counter = PlanWatch::stream_counter(conn.instrumentation());
    if let Some(counter) = &counter {
        // Counted before the statement is sent: a load future dropped
        // mid-flight is already counted as in flight by the watch.
        counter.fetch_add(1, Ordering::AcqRel);
    }
    let result = query.internal_load(conn).await;
    match result {
        Ok(inner) => Ok(TenantRowStream {
            inner,
            open: counter,
            _conn: PhantomData,
        }),
        Err(error) => {
            // The statement failed: nothing runs on its behalf.
            if let Some(counter) = counter {
                counter.fetch_sub(1, Ordering::AcqRel);
            }
            Err(error)
        }
    }
}

/// The rows of a [`load_stream`]: borrows its connection, and leaves it
/// marked (never reused) when dropped before its last row.
pub struct TenantRowStream<'conn, S> {
    inner: S,
    /// The connection's open-stream count, while this stream is unfinished.
    open: Option<Arc<AtomicUsize>>,
    _conn: PhantomData<&'conn mut AsyncPgConnection>,
}

impl<S> std::fmt::Debug for TenantRowStream<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantRowStream")
            .field("finished", &self.open.is_none())
            .finish_non_exhaustive()
    }
}

impl<S, U> Stream for TenantRowStream<'_, S>
where
    S: Stream<Item = QueryResult<U>> + Unpin,
{
    type Item = QueryResult<U>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let item = std::task::ready!(Pin::new(&mut this.inner).poll_next(cx));
        if item.is_none() {
            // The server sent the statement's end: nothing runs any more.
            if let Some(open) = this.open.take() {
                open.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Poll::Ready(item)
    }
}
