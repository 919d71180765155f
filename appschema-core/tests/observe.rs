//! Observability (issue 27.1) against a real PostgreSQL: the spans and
//! events a subscriber sees for checkouts, switches, retired connections
//! and migrate runs, and the metrics a recorder sees. Subscribers and
//! recorders are installed for the test's thread only (migrate's workers
//! inherit the caller's), so tests running in parallel do not mix.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use appschema_core::connection::SharedPool;
use appschema_core::migrate::Migrator;
use appschema_core::observe;
use appschema_core::{registry, MigrationSet, PublicName, SchemaName, Scope};
use appschema_tempdb::TestDb;
use appschema_testkit::tenants::{create_tenants, public_name, tenant};
use diesel::connection::SimpleConnection;
use metrics::{SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::CompositeKey;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// A span or event as the subscriber saw it: its name (the message for an
/// event), its fields, and its enclosing spans from the root.
#[derive(Debug, Clone)]
struct Seen {
    name: String,
    fields: Fields,
    scope: Vec<(String, Fields)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// Whether one of the enclosing spans is `span` with `field = value`.
    fn within(&self, span: &str, field: &str, value: &str) -> bool {
        self.scope
            .iter()
            .any(|(n, f)| n == span && f.get(field).map(String::as_str) == Some(value))
    }
}

#[derive(Default)]
struct Visitor(Fields);

impl Visit for Visitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// Records closed spans and events.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<Seen>>>,
    events: Arc<Mutex<Vec<Seen>>>,
}

fn scope_of<S: Subscriber + for<'a> LookupSpan<'a>>(
    span: Option<tracing_subscriber::registry::SpanRef<'_, S>>,
) -> Vec<(String, Fields)> {
    let Some(span) = span else {
        return Vec::new();
    };
    span.scope()
        .from_root()
        .map(|s| {
            let fields = s.extensions().get::<Fields>().cloned().unwrap_or_default();
            (s.name().to_string(), fields)
        })
        .collect()
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut v = Visitor::default();
        attrs.record(&mut v);
        ctx.span(id).unwrap().extensions_mut().insert(v.0);
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut ext = span.extensions_mut();
        let mut v = Visitor(ext.remove::<Fields>().unwrap_or_default());
        values.record(&mut v);
        ext.insert(v.0);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut v = Visitor::default();
        event.record(&mut v);
        let name = v.0.get("message").cloned().unwrap_or_default();
        let scope = scope_of(ctx.event_span(event));
        self.events.lock().unwrap().push(Seen {
            name,
            fields: v.0,
            scope,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let fields = span
            .extensions()
            .get::<Fields>()
            .cloned()
            .unwrap_or_default();
        let scope = scope_of(span.parent());
        self.spans.lock().unwrap().push(Seen {
            name: span.name().to_string(),
            fields,
            scope,
        });
    }
}

/// Runs `f` with a capturing subscriber on this thread; what it saw.
fn captured(f: impl FnOnce()) -> Capture {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    tracing::subscriber::with_default(subscriber, f);
    capture
}

fn events_named(c: &Capture, event: &str) -> Vec<Seen> {
    c.events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.field("event") == Some(event))
        .cloned()
        .collect()
}

#[test]
fn a_checkout_by_public_name_runs_in_spans_carrying_the_tenants_public_and_schema_names() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = SharedPool::builder(db.url()).max_size(1).build().unwrap();
    let seen = captured(|| {
        drop(pool.get_for_public_name(&public_name(1)).unwrap());
    });
    let spans = seen.spans.lock().unwrap();
    let checkout = spans
        .iter()
        .find(|s| s.name == observe::SPAN_CHECKOUT && s.field("schema") == Some("t1"))
        .unwrap_or_else(|| panic!("no checkout span for t1 in {spans:#?}"));
    assert!(
        checkout.within(observe::SPAN_TENANT, "public_name", "t1.example.com")
            && checkout.within(observe::SPAN_TENANT, "schema", "t1"),
        "the checkout's parent names the tenant: {checkout:#?}"
    );
}

#[test]
fn a_checkout_for_another_tenant_than_the_connections_last_emits_a_switch_event() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = SharedPool::builder(db.url()).max_size(1).build().unwrap();
    let seen = captured(|| {
        for i in [0, 0, 1, 1, 0] {
            drop(pool.get_for(&tenant(i)).unwrap());
        }
    });
    let switched: Vec<_> = events_named(&seen, observe::EVENT_SWITCH)
        .iter()
        .map(|e| e.field("schema").unwrap().to_string())
        .collect();
    // The first checkout moves the new connection off the shared-only
    // path; repeats of the same tenant are no switch.
    assert_eq!(switched, ["t0", "t1", "t0"]);
    let last = events_named(&seen, observe::EVENT_SWITCH).pop().unwrap();
    assert!(
        last.within(observe::SPAN_CHECKOUT, "schema", "t0"),
        "{last:#?}"
    );
}

#[test]
fn a_connection_that_served_its_limit_of_tenants_is_retired_with_an_event_saying_so() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 3);
    let pool = SharedPool::builder(db.url())
        .max_size(1)
        .max_tenants_per_connection(Some(2))
        .build()
        .unwrap();
    let first = captured(|| drop(pool.get_for(&tenant(0)).unwrap()));
    assert!(events_named(&first, observe::EVENT_RETIRED).is_empty());
    let seen = captured(|| drop(pool.get_for(&tenant(1)).unwrap()));
    let retired = events_named(&seen, observe::EVENT_RETIRED);
    assert_eq!(retired.len(), 1, "{retired:#?}");
    assert_eq!(retired[0].field("reason"), Some("tenant_bound"));
    assert_eq!(retired[0].field("tenants_served"), Some("2"));
}

/// Registers tenants `t0..tn` with empty schemas.
fn empty_tenants(db: &TestDb, n: usize) {
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    for i in 0..n {
        conn.batch_execute(&format!("CREATE SCHEMA t{i}")).unwrap();
        registry::insert(
            &mut conn,
            &PublicName::new(&public_name(i)).unwrap(),
            &SchemaName::new(format!("t{i}")).unwrap(),
        )
        .unwrap();
    }
}

fn one_table() -> MigrationSet {
    MigrationSet::from_parts([
        ("001", Scope::Shared, "CREATE TABLE plans (id int8)"),
        ("002", Scope::Isolated, "CREATE TABLE orders (id int8)"),
    ])
}

#[test]
fn a_migrate_run_has_one_span_per_tenant_schema_with_its_duration() {
    let db = TestDb::new();
    empty_tenants(&db, 3);
    let seen = captured(|| {
        let report = Migrator::new(db.url())
            .jobs(2)
            .migrate(&one_table(), &|_| {})
            .unwrap();
        assert!(report.is_success(), "{:?}", report.failures);
    });
    let spans = seen.spans.lock().unwrap();
    for i in 0..3 {
        let schema = format!("t{i}");
        let span = spans
            .iter()
            .find(|s| s.name == observe::SPAN_MIGRATE_SCHEMA && s.field("schema") == Some(&schema))
            .unwrap_or_else(|| panic!("no migrate span for {schema} in {spans:#?}"));
        assert_eq!(span.field("public_name"), Some(public_name(i).as_str()));
        assert!(
            span.scope.iter().any(|(n, _)| n == observe::SPAN_MIGRATE),
            "a schema's span is inside the run's: {span:#?}"
        );
        let done = seen.events.lock().unwrap().iter().any(|e| {
            e.name == "done"
                && e.field("elapsed_ms").is_some()
                && e.within(observe::SPAN_MIGRATE_SCHEMA, "schema", &schema)
        });
        assert!(done, "{schema}'s span ends with its duration");
    }
}

type Metrics = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// Runs `f` with a debugging recorder on this thread; what it recorded (a
/// snapshot takes the values, so there is one).
fn recorded(f: impl FnOnce()) -> Metrics {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, f);
    snapshotter.snapshot().into_vec()
}

/// The value of the metric `name` with exactly the labels `labels`.
fn metric<'m>(s: &'m Metrics, name: &str, labels: &[(&str, &str)]) -> Option<&'m DebugValue> {
    s.iter()
        .find(|(key, ..)| {
            let key = key.key();
            let mut have: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            let mut want = labels.to_vec();
            have.sort();
            want.sort();
            key.name() == name && have == want
        })
        .map(|(.., value)| value)
}

fn counter(s: &Metrics, name: &str, labels: &[(&str, &str)]) -> u64 {
    match metric(s, name, labels) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

#[test]
fn checkouts_are_counted_by_outcome_and_by_switch_or_same_tenant() {
    let db = TestDb::new();
    create_tenants(&mut db.conn(), 2);
    let pool = SharedPool::builder(db.url()).max_size(1).build().unwrap();
    let metrics = recorded(|| {
        for i in [0, 0, 1, 1, 1, 0] {
            drop(pool.get_for(&tenant(i)).unwrap());
        }
        let missing = SchemaName::new("nobody").unwrap();
        assert!(pool.get_for(&missing).is_err());
    });
    let sync = [("pool", "sync")];
    assert_eq!(counter(&metrics, observe::CHECKOUT_SWITCHES, &sync), 3);
    assert_eq!(counter(&metrics, observe::CHECKOUT_SAME_TENANT, &sync), 3);
    let by = |outcome| {
        counter(
            &metrics,
            observe::CHECKOUTS,
            &[("pool", "sync"), ("outcome", outcome)],
        )
    };
    assert_eq!(by("ok"), 6);
    assert_eq!(by("schema_missing"), 1);
    match metric(&metrics, observe::CHECKOUT_WAIT, &sync) {
        Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 7),
        other => panic!("no checkout wait histogram: {other:?}"),
    }
    match metric(&metrics, observe::POOL_CONNECTIONS, &sync) {
        Some(DebugValue::Gauge(open)) => assert_eq!(open.into_inner(), 1.0),
        other => panic!("no pool size gauge: {other:?}"),
    }
}

#[test]
fn a_migrate_run_counts_the_migrations_it_applied_and_failed() {
    let db = TestDb::new();
    empty_tenants(&db, 3);
    let first = recorded(|| {
        let report = Migrator::new(db.url())
            .migrate(&one_table(), &|_| {})
            .unwrap();
        assert!(report.is_success(), "{:?}", report.failures);
    });
    assert_eq!(counter(&first, observe::MIGRATIONS_APPLIED, &[]), 1 + 3);
    assert_eq!(counter(&first, observe::MIGRATIONS_FAILED, &[]), 0);
    // One tenant's schema already has the table the next migration creates.
    db.conn()
        .batch_execute("CREATE TABLE t1.notes (id int8)")
        .unwrap();
    let set = MigrationSet::from_parts([
        ("001", Scope::Shared, "CREATE TABLE plans (id int8)"),
        ("002", Scope::Isolated, "CREATE TABLE orders (id int8)"),
        ("003", Scope::Isolated, "CREATE TABLE notes (id int8)"),
    ]);
    let second = recorded(|| {
        let report = Migrator::new(db.url()).migrate(&set, &|_| {}).unwrap();
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
    });
    assert_eq!(counter(&second, observe::MIGRATIONS_APPLIED, &[]), 2);
    assert_eq!(counter(&second, observe::MIGRATIONS_FAILED, &[]), 1);
}

#[test]
fn a_tenant_creation_is_timed_by_the_source_it_used_in_a_span_naming_the_tenant() {
    use appschema_core::provision::{create_tenant, ensure_spares, NewTenant, Source};
    let db = TestDb::new();
    let mut conn = db.conn();
    registry::install(&mut conn).unwrap();
    let set = MigrationSet::from_parts([("001", Scope::Isolated, "CREATE TABLE orders (id int8)")]);
    ensure_spares(&mut conn, &set, 1).unwrap();
    let mut seen = None;
    let metrics = recorded(|| {
        seen = Some(captured(|| {
            let plain = NewTenant::new("plain.test").unwrap();
            create_tenant(&mut conn, &set, &plain).unwrap();
            let fast = NewTenant::new("fast.test").unwrap().source(Source::Spare);
            create_tenant(&mut conn, &set, &fast).unwrap();
        }));
    });
    for source in ["migrations", "spare"] {
        match metric(&metrics, observe::TENANT_CREATION, &[("source", source)]) {
            Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 1, "{source}"),
            other => panic!("no creation time for {source}: {other:?}"),
        }
    }
    let seen = seen.unwrap();
    let spans = seen.spans.lock().unwrap();
    let fast = spans
        .iter()
        .find(|s| s.name == observe::SPAN_PROVISION && s.field("public_name") == Some("fast.test"))
        .unwrap_or_else(|| panic!("no provision span for fast.test in {spans:#?}"));
    assert_eq!(fast.field("source"), Some("spare"));
    assert_eq!(fast.field("schema"), Some("fast_test"));
}
