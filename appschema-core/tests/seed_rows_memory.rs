//! A history seeding 200 000 rows: the template's text stays small, the
//! tenant built from it holds every row, and this process's peak memory
//! does not grow with the rows (they are copied server-side, never sent to
//! or from the client). Alone in its test binary: the peak (`VmHWM`) is the
//! process's, and no other test may move it.

use appschema_core::provision::{
    create_tenant, create_tenant_from_template, generate_template, store_template, Source, Template,
};
use appschema_testkit::provisioning::{db_with_registry, isolated, new_tenant, query_strings};

const ROWS: usize = 200_000;

/// The process's peak resident set size, in KiB.
fn peak_rss_kib() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .expect("VmHWM in /proc/self/status")
}

/// How many rows, and a digest of them in order.
fn digest(conn: &mut diesel::PgConnection, from: &str) -> Vec<String> {
    query_strings(
        conn,
        &format!(
            "SELECT count(*) || ' ' || md5(string_agg(id || payload, ',' ORDER BY id)) AS value FROM {from}"
        ),
    )
}

#[test]
fn two_hundred_thousand_seed_rows_stay_out_of_the_template_and_out_of_this_process() {
    let (db, mut conn) = db_with_registry();
    // About 30 MB of rows: text the old template carried, parsed, cached
    // and sent in one batch.
    let m = isolated(vec![(
        "20240101000000".into(),
        format!(
            "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL);
             INSERT INTO big SELECT g, md5(g::text) || repeat('x', 100)
               FROM generate_series(1, {ROWS}) g;"
        ),
    )]);
    let before = peak_rss_kib();

    let template = generate_template(&mut conn, db.url(), &m).unwrap();
    let text = template.to_string();
    assert!(text.len() < 4096, "{} bytes: {text}", text.len());
    store_template(&mut conn, &template).unwrap();
    create_tenant(
        &mut conn,
        &m,
        &new_tenant("t.test").source(Source::Template),
    )
    .unwrap();
    let reread = Template::parse(&text).unwrap();
    create_tenant_from_template(&mut conn, &m, &new_tenant("r.test"), &reread).unwrap();

    let grown_kib = peak_rss_kib().saturating_sub(before);
    eprintln!(
        "peak RSS grew by {grown_kib} KiB (template text: {} bytes)",
        text.len()
    );
    let expected = digest(
        &mut conn,
        &format!(
            "(SELECT g AS id, md5(g::text) || repeat('x', 100) AS payload
                FROM generate_series(1, {ROWS}) g) rows"
        ),
    );
    assert!(expected[0].starts_with(&format!("{ROWS} ")));
    assert_eq!(digest(&mut conn, "t_test.big"), expected);
    assert_eq!(digest(&mut conn, "r_test.big"), expected);
    // 30 MB of rows held once would be 30 000 KiB; 8 MiB leaves room for
    // allocator noise and nothing proportional to the rows.
    assert!(
        grown_kib < 8 * 1024,
        "the process's peak grew by {grown_kib} KiB while building tenants with {ROWS} seed rows"
    );
}
