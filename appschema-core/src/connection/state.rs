//! [`PoolState`]: what every pool, sync or async, reports of itself.

/// A pool's connections at one moment, as `state()` reports them on every
/// pool: [`SharedPool`](super::SharedPool), [`TenantPool`](super::TenantPool)
/// and [`TransactionScopedPool`](super::TransactionScopedPool), and the
/// async `AsyncSharedPool`, `AsyncTenantPool` and
/// `AsyncTransactionScopedPool`. appschema's own type, so the pool crates
/// underneath (r2d2, deadpool) stay out of the API.
///
/// With tenant affinity, connections parked by tenant count as open and
/// not idle (they are out of the underlying pool).
///
/// ```no_run
/// use appschema::connection::SharedPool;
///
/// let pool = SharedPool::builder("postgres:///app").max_size(8).build()?;
/// let state = pool.state();
/// assert!(state.idle <= state.connections && state.connections <= state.max_size);
/// println!("{} of {} connections in use", state.in_use(), state.max_size);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolState {
    /// Connections open: idle and checked out.
    pub connections: u32,
    /// Connections open and idle in the pool, ready for a checkout.
    pub idle: u32,
    /// Checkouts waiting for a connection, where the pool counts them: the
    /// async pools do; `None` on the sync pools (r2d2 does not say).
    pub waiting: Option<u32>,
    /// The most connections the pool opens (`max_size`).
    pub max_size: u32,
}

impl PoolState {
    /// A state from its parts. For other appschema crates (the async
    /// pools); applications read one from a pool's `state()`.
    #[doc(hidden)]
    pub fn new(connections: u32, idle: u32, waiting: Option<u32>, max_size: u32) -> PoolState {
        PoolState {
            connections,
            idle,
            waiting,
            max_size,
        }
    }

    /// Connections checked out (open and not idle).
    pub fn in_use(&self) -> u32 {
        self.connections.saturating_sub(self.idle)
    }

    /// The sync pools' state, from r2d2's.
    pub(crate) fn of_r2d2<M: r2d2::ManageConnection>(pool: &r2d2::Pool<M>) -> PoolState {
        let state = pool.state();
        PoolState::new(
            state.connections,
            state.idle_connections,
            None,
            pool.max_size(),
        )
    }
}
