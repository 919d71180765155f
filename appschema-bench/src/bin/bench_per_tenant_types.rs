//! What a change of tenant costs a `SharedPool` when the database has
//! per-tenant types (issue 27), three ways, on the same workload: one
//! thread, a pool of one connection, every checkout for another tenant
//! than the last (10 tenants in turn), each running the same three
//! statements through diesel's query builder (prepared once, cached).
//!
//! - `keep`: statements kept across the change (`per_tenant_types(false)`;
//!   PostgreSQL re-plans them for the new path): what an application
//!   without per-tenant types pays, the baseline.
//! - `forget`: what the pool does with per-tenant types: diesel's statements
//!   forgotten on a change of tenant (client cache emptied, `DEALLOCATE` on
//!   the server) and prepared again.
//! - `reconnect`: the alternative, a connection closed on every change of
//!   tenant (what the async pools do): `max_tenants_per_connection(Some(1))`
//!   on this workload.
//!
//! The three run in interleaved rounds whose order rotates; the table gives
//! the median over the rounds of each mode's time per checkout, and its
//! ratio to `keep` in the same round.
//!
//! `cargo run --release -p appschema-bench --bin bench_per_tenant_types`

use std::time::{Duration, Instant};

use appschema::connection::SharedPool;
use appschema::SchemaName;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! { items (id) { id -> Int8, marker -> Text, n -> Int4 } }

const TENANTS: usize = 10;
const ROUNDS: usize = 11;
const RUN: Duration = Duration::from_millis(500);

fn tenant(i: usize) -> SchemaName {
    SchemaName::new(format!("t{i}")).unwrap()
}

/// A request's work: three distinct cached statements.
fn work(conn: &mut PgConnection, k: i64) {
    let id = k % 100 + 1;
    let _: String = items::table
        .find(id)
        .select(items::marker)
        .first(conn)
        .unwrap();
    let _: i32 = items::table.find(id).select(items::n).first(conn).unwrap();
    let _: i64 = items::table
        .filter(items::n.gt(50))
        .count()
        .get_result(conn)
        .unwrap();
}

/// Checkouts per `RUN`, each for the next tenant in turn; seconds per
/// checkout.
fn run(pool: &SharedPool, tenants: &[SchemaName]) -> f64 {
    let start = Instant::now();
    let mut k = 0usize;
    while start.elapsed() < RUN {
        let mut conn = pool.get_for(&tenants[k % tenants.len()]).unwrap();
        work(&mut conn, k as i64);
        k += 1;
    }
    start.elapsed().as_secs_f64() / k as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let db = appschema_tempdb::TestDb::new();
    let url = db.url().to_string();
    let mut sql = String::new();
    for i in 0..TENANTS {
        sql.push_str(&format!(
            "CREATE SCHEMA t{i}; CREATE TYPE t{i}.mood AS ENUM ('happy', 'sad');
             CREATE TABLE t{i}.items (id int8 PRIMARY KEY, marker text NOT NULL, n int4 NOT NULL, m t{i}.mood);
             INSERT INTO t{i}.items SELECT g, 't{i}', g, 'happy' FROM generate_series(1, 100) g;"
        ));
    }
    db.conn().batch_execute(&sql).unwrap();
    db.conn().batch_execute("VACUUM ANALYZE").unwrap();
    let tenants: Vec<SchemaName> = (0..TENANTS).map(tenant).collect();
    let pool = |types: bool, limit: Option<usize>| {
        SharedPool::builder(url.clone())
            .max_size(1)
            .per_tenant_types(types)
            .max_tenants_per_connection(limit)
            .build()
            .unwrap()
    };
    let modes = [
        ("keep", pool(false, None)),
        ("forget", pool(true, None)),
        ("reconnect", pool(false, Some(1))),
    ];
    for (_, p) in &modes {
        run(p, &tenants);
    }
    let mut per_op: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); modes.len()];
    for round in 0..ROUNDS {
        let mut this = vec![0.0; modes.len()];
        for j in 0..modes.len() {
            let m = (round + j) % modes.len();
            this[m] = run(&modes[m].1, &tenants);
        }
        for m in 0..modes.len() {
            per_op[m].push(this[m]);
            ratio[m].push(this[m] / this[0]);
        }
    }
    println!("| mode | µs per checkout (3 statements) | × keep |");
    println!("|---|---:|---:|");
    for (m, (name, _)) in modes.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.2}× |",
            median(per_op[m].clone()) * 1e6,
            median(ratio[m].clone())
        );
    }
}
