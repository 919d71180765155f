//! `min_idle`, `idle_timeout` and `max_lifetime` of the
//! [`AsyncSharedPool`](crate::AsyncSharedPool): one background task per pool.
//!
//! deadpool 0.13 keeps no idle minimum and closes nothing by itself: it
//! opens a connection when a checkout finds none idle and checks a
//! connection's age only in the manager's `recycle` (at its next
//! checkout). r2d2, under the sync `SharedPool`, runs a reaper thread and
//! refills to `min_idle`. The async pool gets the same from one tokio task,
//! built from deadpool's public API:
//!
//! - idle and old connections: [`managed::Pool::retain`], which drops
//!   connections sitting in the pool (never one checked out: that one's age
//!   is checked by `recycle` when it is next checked out);
//! - `min_idle`: deadpool has no "add a connection" call, so the task checks
//!   out, at once, the idle connections plus as many as are missing; the
//!   pool hands out the idle ones first and opens the rest, and all go back
//!   when the task drops them. Connections opened this way are plain
//!   `Manager::create` connections: each still gets the full session reset
//!   and switch when a request checks it out, like any other.
//!
//! The task holds only a [`managed::WeakPool`]: it ends when the last clone
//! of the pool is dropped, or with its runtime. It is started by `build`
//! when called on a tokio runtime, else by the first checkout (which runs
//! on one), and started again by a checkout if its runtime went away while
//! the pool lived on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool::managed;

use crate::pool::{AsyncTenantManager, DeadPool};

/// How often the task looks at the pool: often enough that a connection is
/// closed within a quarter of its `idle_timeout` / `max_lifetime` past the
/// limit, and a missing idle connection is reopened within a second.
fn period(settings: &Settings) -> Duration {
    let mut period = Duration::from_secs(1);
    for limit in [settings.idle_timeout, settings.max_lifetime]
        .into_iter()
        .flatten()
    {
        period = period.min(limit / 4);
    }
    period.max(Duration::from_millis(10))
}

/// What the task enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) min_idle: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
}

impl Settings {
    fn needed(&self) -> bool {
        self.min_idle > 0 || self.idle_timeout.is_some() || self.max_lifetime.is_some()
    }
}

/// The task's state, shared by every clone of one pool.
#[derive(Debug)]
pub(crate) struct Maintainer {
    settings: Settings,
    running: Arc<AtomicBool>,
}

impl Maintainer {
    pub(crate) fn new(settings: Settings) -> Maintainer {
        Maintainer {
            settings,
            running: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the task unless it runs (or nothing needs it, or there is no
    /// tokio runtime here: then a later call, from a checkout, starts it).
    pub(crate) fn ensure_running(&self, pool: &DeadPool) {
        if !self.settings.needed() || self.running.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let stopped = Stopped(Arc::clone(&self.running));
        let weak = pool.weak();
        let settings = self.settings;
        runtime.spawn(async move {
            // Cleared however the task ends: pool dropped, runtime shut down.
            let _stopped = stopped;
            run(weak, settings).await;
        });
    }
}

/// Marks the task stopped when dropped.
struct Stopped(Arc<AtomicBool>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn run(weak: managed::WeakPool<AsyncTenantManager>, settings: Settings) {
    let period = period(&settings);
    loop {
        {
            let Some(pool) = weak.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            close_expired(&pool, &settings);
            top_up(&pool, settings.min_idle).await;
        }
        tokio::time::sleep(period).await;
    }
}

/// Closes the idle connections older than `max_lifetime`, and those idle
/// for longer than `idle_timeout` beyond the `min_idle` kept (the least
/// recently used first).
fn close_expired(pool: &DeadPool, settings: &Settings) {
    if settings.idle_timeout.is_none() && settings.max_lifetime.is_none() {
        return;
    }
    let idle = pool.status().available;
    let mut may_close_idle = idle.saturating_sub(settings.min_idle);
    // deadpool queues returned connections at the back and hands out from
    // the front: the front ones have waited longest.
    let removed = pool.retain(|_, metrics| {
        if settings
            .max_lifetime
            .is_some_and(|max| metrics.age() >= max)
        {
            may_close_idle = may_close_idle.saturating_sub(1);
            return false;
        }
        if may_close_idle > 0
            && settings
                .idle_timeout
                .is_some_and(|max| metrics.last_used() >= max)
        {
            may_close_idle -= 1;
            return false;
        }
        true
    });
    // Dropping a connection closes it (its socket and its backend).
    drop(removed);
}

/// Opens connections until `min_idle` sit idle (within `max_size`).
async fn top_up(pool: &DeadPool, min_idle: usize) {
    let status = pool.status();
    if status.available >= min_idle || status.size >= status.max_size {
        return;
    }
    let open = (min_idle - status.available).min(status.max_size - status.size);
    // Never wait for a slot: a request needs it more.
    let timeouts = managed::Timeouts {
        wait: Some(Duration::ZERO),
        ..pool.timeouts()
    };
    let mut held = Vec::with_capacity(status.available + open);
    for _ in 0..status.available + open {
        match pool.timeout_get(&timeouts).await {
            Ok(conn) => held.push(conn),
            // The server refuses, or requests took the slots: next period.
            Err(_) => break,
        }
    }
    // Back to the pool, idle: dropped together once all were opened.
    drop(held);
}
