//! The worker pool shared by the migration executor and the across-tenants
//! runner: N threads, each with its own connection, pulling work until none
//! is left.

use std::sync::Mutex;

use diesel::PgConnection;

/// Runs the work `next_work` hands out on `workers` workers (at least one),
/// each with a connection from `conns`; a worker without one opens its own
/// with `connect`, in its own thread, so the connects of a wide run overlap
/// each other and the first worker's work. `handle` does one item on the
/// worker's connection; its `Err` means the worker cannot go on (it could
/// not replace a broken connection) and stops it. Every connection is left
/// in `conns` afterwards, for the next run.
///
/// A worker that cannot connect takes no work; the run fails only if no
/// worker could run to the end (the others do the whole run otherwise).
pub(crate) fn run_workers<W, E: Send>(
    workers: usize,
    conns: &mut Vec<PgConnection>,
    connect: &(dyn Fn() -> Result<PgConnection, E> + Sync),
    next_work: &(dyn Fn() -> Option<W> + Sync),
    handle: &(dyn Fn(&mut PgConnection, W) -> Result<(), E> + Sync),
) -> Result<(), E> {
    let workers = workers.max(1);
    let mut slots: Vec<Option<PgConnection>> = conns.drain(..).map(Some).collect();
    slots.resize_with(slots.len().max(workers), || None);
    let error = Mutex::new(None);
    let parent = crate::observe::Parent::current();
    std::thread::scope(|scope| {
        let handles: Vec<_> = slots
            .iter_mut()
            .take(workers)
            .map(|slot| {
                let parent = &parent;
                scope.spawn(move || -> Result<(), E> {
                    let _parent = parent.enter();
                    let conn = match slot {
                        Some(conn) => conn,
                        None => slot.insert(connect()?),
                    };
                    while let Some(work) = next_work() {
                        handle(conn, work)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut finished = 0;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => finished += 1,
                Ok(Err(e)) => *error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        if finished > 0 {
            *error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    });
    conns.extend(slots.into_iter().flatten());
    match error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
