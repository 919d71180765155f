//! Benchmark: moving one tenant of 1 million rows to another database with
//! `export_tenant` + `import_tenant` (what `appschema-cli export` /
//! `import` run), against `pg_dump -Fc -n SCHEMA` + `pg_restore` of the same
//! schema into an empty database, in the same process, on the same
//! throwaway server.
//!
//! The tenant: `customers` (10,000 rows) and `orders` (N rows, default
//! 1,000,000: bigserial key, a foreign key to customers, numeric, text,
//! timestamptz, two secondary indexes), built by isolated migrations.
//!
//! `cargo run --release -p appschema-bench --bin bench_transfer [-- ROWS [ROUNDS]]`
//! (defaults 1000000 and 3). Rounds alternate which way goes first, so a
//! noisy neighbour hits both alike; the medians are reported. Peak memory:
//! the `VmHWM` of this process around ours (reset before each step through
//! `/proc/self/clear_refs`), `ru_maxrss` of the pg_dump and pg_restore
//! child processes (from `wait4`), and of the schema-only pg_dump our
//! export runs twice (the same command run here, from `wait4`). Prints a Markdown table for BENCHMARKS.md.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use appschema::provision::{create_tenant, export_tenant, import_tenant, ImportOptions, NewTenant};
use appschema::{registry, MigrationSet, PublicName, Scope};
use appschema_tempdb::TestDb;
use diesel::connection::SimpleConnection;
use diesel::PgConnection;

fn migrations() -> MigrationSet {
    MigrationSet::from_parts([
        (
            "20240101000000".to_string(),
            Scope::Isolated,
            "CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text NOT NULL);"
                .to_string(),
        ),
        (
            "20240102000000".to_string(),
            Scope::Isolated,
            "CREATE TABLE orders (
                 id bigserial PRIMARY KEY,
                 customer_id bigint NOT NULL REFERENCES customers (id),
                 status text NOT NULL DEFAULT 'new',
                 total numeric(12, 2) NOT NULL,
                 note text,
                 created_at timestamptz NOT NULL DEFAULT now());
             CREATE INDEX orders_customer ON orders (customer_id);
             CREATE INDEX orders_created ON orders (created_at);"
                .to_string(),
        ),
    ])
}

/// A fresh database with the registry installed.
fn database() -> (TestDb, PgConnection) {
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    (db, conn)
}

/// Peak resident memory of this process since the last reset, in KiB.
fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets `VmHWM` to the current resident size (Linux 4.0+).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Runs `cmd` and returns (duration, peak RSS of the child in KiB).
// The child is reaped by `wait4` (which std's `Child::wait` does not
// offer: it drops the rusage), so clippy's zombie check does not see it.
#[allow(clippy::zombie_processes)]
fn run_child(cmd: &mut Command) -> (Duration, u64) {
    let start = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (`child` is never waited).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed: {status}"
    );
    (elapsed, usage.ru_maxrss as u64)
}

#[derive(Default)]
struct Samples {
    export: Vec<Duration>,
    import: Vec<Duration>,
    export_kib: u64,
    import_kib: u64,
    bytes: u64,
}

fn median(v: &[Duration]) -> f64 {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

fn ours(source: &TestDb, file: &Path, s: &mut Samples) {
    let name = PublicName::new("big.test").unwrap();
    let mut conn = source.conn();
    let hwm_ok = reset_hwm();
    let t = Instant::now();
    let out = BufWriter::new(File::create(file).unwrap());
    let exported = export_tenant(&mut conn, source.url(), &name, out, |_| {}).unwrap();
    s.export.push(t.elapsed());
    s.export_kib = s.export_kib.max(vm_hwm_kib());
    s.bytes = exported.bytes;
    let (_target, mut target) = database();
    assert!(hwm_ok == reset_hwm());
    let t = Instant::now();
    let input = BufReader::new(File::open(file).unwrap());
    let imported = import_tenant(
        &mut target,
        &migrations(),
        input,
        &ImportOptions::new(),
        |_| {},
    )
    .unwrap();
    s.import.push(t.elapsed());
    s.import_kib = s.import_kib.max(vm_hwm_kib());
    assert_eq!(
        imported.tables.iter().map(|t| t.rows).sum::<u64>(),
        exported.tables.iter().map(|t| t.rows).sum::<u64>()
    );
}

fn baseline(bin: &Path, source: &TestDb, file: &Path, s: &mut Samples) {
    let (elapsed, kib) = run_child(
        Command::new(bin.join("pg_dump"))
            .args(["-Fc", "--no-owner", "-n", "big_test", "-f"])
            .arg(file)
            .args(["--dbname", source.url()]),
    );
    s.export.push(elapsed);
    s.export_kib = s.export_kib.max(kib);
    s.bytes = std::fs::metadata(file).unwrap().len();
    let (target, _conn) = database();
    let (elapsed, kib) = run_child(
        Command::new(bin.join("pg_restore"))
            .args(["--no-owner", "--exit-on-error", "--dbname", target.url()])
            .arg(file),
    );
    s.import.push(elapsed);
    s.import_kib = s.import_kib.max(kib);
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding pg_restore.
fn newest_pg_bin() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_restore").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: u64 = args.next().map_or(1_000_000, |a| a.parse().expect("ROWS"));
    let rounds: usize = args.next().map_or(3, |a| a.parse().expect("ROUNDS"));
    // pg_dump and pg_restore from one directory, the server's version's
    // (not Debian's /usr/bin wrappers); our export runs that pg_dump too.
    let bin: PathBuf = newest_pg_bin()
        .or_else(|| {
            appschema::provision::find_pg_dump().and_then(|p| p.parent().map(Path::to_path_buf))
        })
        .expect("pg_dump and pg_restore");
    std::env::set_var("APPSCHEMA_PG_DUMP", bin.join("pg_dump"));
    eprintln!("pg_dump and pg_restore from {}", bin.display());

    let (source, mut conn) = database();
    create_tenant(
        &mut conn,
        &migrations(),
        &NewTenant::new("big.test").unwrap(),
    )
    .unwrap();
    let t = Instant::now();
    conn.batch_execute(&format!(
        "INSERT INTO big_test.customers (name, email)
           SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 10000) g;
         INSERT INTO big_test.orders (customer_id, status, total, note, created_at)
           SELECT 1 + g % 10000, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3], (g % 100000) / 100.0,
                  CASE WHEN g % 7 = 0 THEN NULL ELSE 'note for order ' || g END,
                  TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 minute'
             FROM generate_series(1, {rows}) g;"
    ))
    .unwrap();
    conn.batch_execute("VACUUM ANALYZE big_test.orders")
        .unwrap();
    eprintln!("tenant with {rows} orders built in {:.1?}", t.elapsed());

    let dir = tempfile::tempdir().unwrap();
    let (mut a, mut b) = (Samples::default(), Samples::default());
    // The pg_dumps our export runs for the DDL are children of the library
    // (not reaped here): the same command, run here, gives their peak.
    let ddl_dump_kib = ["pre-data", "post-data"]
        .iter()
        .map(|section| {
            run_child(
                Command::new(bin.join("pg_dump"))
                    .args(["--no-owner", "-n", "big_test", "-f", "/dev/null"])
                    .arg(format!("--section={section}"))
                    .args(["--dbname", source.url()]),
            )
            .1
        })
        .max()
        .unwrap_or(0);
    for round in 0..rounds {
        let ours_file = dir.path().join("big.tenant");
        let dump_file = dir.path().join("big.dump");
        if round % 2 == 0 {
            ours(&source, &ours_file, &mut a);
            baseline(&bin, &source, &dump_file, &mut b);
        } else {
            baseline(&bin, &source, &dump_file, &mut b);
            ours(&source, &ours_file, &mut a);
        }
        eprintln!(
            "round {round}: ours {:.2?} + {:.2?}, pg_dump/pg_restore {:.2?} + {:.2?}",
            a.export[round], a.import[round], b.export[round], b.import[round]
        );
    }
    let total = |s: &Samples| -> f64 {
        let mut sums: Vec<Duration> = s
            .export
            .iter()
            .zip(&s.import)
            .map(|(e, i)| *e + *i)
            .collect();
        sums.sort();
        sums[sums.len() / 2].as_secs_f64()
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("| {rows} rows, median of {rounds} | export | import | export + import | peak RSS export / import | file |");
    println!("|---|---|---|---|---|---|");
    for (label, s) in [
        ("`export_tenant` + `import_tenant`", &a),
        ("`pg_dump -Fc -n` + `pg_restore`", &b),
    ] {
        println!(
            "| {label} | {:.2} s | {:.2} s | {:.2} s | {:.1} / {:.1} MiB | {:.1} MiB |",
            median(&s.export),
            median(&s.import),
            total(s),
            mib(s.export_kib),
            mib(s.import_kib),
            s.bytes as f64 / (1024.0 * 1024.0)
        );
    }
    println!(
        "\nours also runs pg_dump twice for the DDL (`--section pre-data` / `post-data`, schema only): peak RSS {:.1} MiB each",
        mib(ddl_dump_kib)
    );
    println!(
        "\nratio (ours / pg_dump + pg_restore, export + import): {:.2}x",
        total(&a) / total(&b)
    );
}
