//! What TLS costs the async pool, on one throwaway server that accepts
//! both (`TempTlsCluster::start_allowing_plaintext_tcp`), over TCP to
//! `localhost`, plaintext (`sslmode=disable`) against TLS
//! (`sslmode=verify-full`, the built-in rustls connector):
//!
//! - **connect**: a checkout that must open its connection (a fresh pool:
//!   TCP, the TLS handshake, start-up, the pool's connect query and
//!   prepared switch, then the switch);
//! - **checkout**: a checkout of an open connection plus one `SELECT 1`
//!   (two round trips, encrypted or not).
//!
//! Modes alternate round by round so drift on a shared machine hits both.
//!
//! `cargo run --release -p appschema-bench --bin bench_tls --features tls-rustls [rounds]`
use std::time::{Duration, Instant};

use appschema::async_pool::AsyncSharedPool;
use appschema::SchemaName;
use appschema_tempdb::TempTlsCluster;
use diesel::Connection;
use diesel_async::SimpleAsyncConnection;

const CONNECTS: usize = 200;
const CHECKOUTS: usize = 2000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(5, |n| n.parse().expect("rounds: a number"));
    let tls = TempTlsCluster::start_allowing_plaintext_tcp().expect("a TLS cluster");
    let mut admin = diesel::PgConnection::establish(&tls.cluster().url()).unwrap();
    diesel::connection::SimpleConnection::batch_execute(&mut admin, "CREATE SCHEMA t0").unwrap();
    let tenant = SchemaName::new("t0").unwrap();
    let base = tls.tcp_url_for("postgres");
    let modes = [
        ("plaintext", format!("{base}?sslmode=disable")),
        (
            "tls verify-full",
            format!(
                "{base}?sslmode=verify-full&sslrootcert={}",
                tls.ca_cert().display()
            ),
        ),
    ];
    let mut connect = [Duration::ZERO; 2];
    let mut checkout = [Duration::ZERO; 2];
    for round in 0..rounds {
        for step in 0..2 {
            let m = (round + step) % 2;
            let url = &modes[m].1;
            let start = Instant::now();
            for _ in 0..CONNECTS {
                let pool = AsyncSharedPool::builder(url).max_size(1).build().unwrap();
                drop(pool.get_for(&tenant).await.unwrap());
            }
            connect[m] += start.elapsed();
            let pool = AsyncSharedPool::builder(url).max_size(1).build().unwrap();
            drop(pool.get_for(&tenant).await.unwrap());
            let start = Instant::now();
            for _ in 0..CHECKOUTS {
                let mut conn = pool.get_for(&tenant).await.unwrap();
                conn.batch_execute("SELECT 1").await.unwrap();
            }
            checkout[m] += start.elapsed();
        }
    }
    let per = |total: Duration, n: usize| total.as_secs_f64() * 1e6 / (n * rounds) as f64;
    println!("{rounds} rounds; {CONNECTS} connects and {CHECKOUTS} checkouts per round and mode");
    println!("| mode | connect (µs) | checkout + SELECT 1 (µs) |");
    println!("|---|---|---|");
    for (m, (name, _)) in modes.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.0} |",
            per(connect[m], CONNECTS),
            per(checkout[m], CHECKOUTS)
        );
    }
    println!(
        "| TLS / plaintext | {:.2}× | {:.2}× |",
        per(connect[1], CONNECTS) / per(connect[0], CONNECTS),
        per(checkout[1], CHECKOUTS) / per(checkout[0], CHECKOUTS)
    );
}
