#!/usr/bin/env python3
"""Client CPU per request by component, from `perf script -F comm,tid,ip,sym`
of a `perf record --call-graph dwarf` of the saas benchmark's server process
(scripts/profile_saas_request.sh with PERF=1). A sample goes to the first
COMPONENT (in the order listed) any frame of its stack belongs to, whatever
it called (libpq, libc, the kernel): so the reset message sent inside r2d2's
checkout counts as the switch, not as r2d2, and a query's socket I/O as the
query. A sample in none of them goes to the innermost frame that names a
LAYER (routing, middleware, hyper, axum, tokio), since the layers nest
(the handler's future is polled from inside every layer around it).

Usage: perf script -i perf.X.data -F comm,tid,ip,sym | classify_perf.py REQUESTS CPU_SECONDS
  REQUESTS: requests served during the recording; CPU_SECONDS: the process's
  CPU time over it (/proc/<pid>/stat): samples are scaled to that total.
"""
import re
import sys
from collections import Counter

COMPONENTS = [
    ("switch message (reset + check + SET): build, send, wait, read",
     r"search_path::run_seeded_switch|search_path::run_session_switch|switch::run_session_switch|TenantManager as r2d2::ManageConnection>::is_valid|search_path::write_seed|keep_types_resolved_on|types::keep_apart"),
    ("plain pool's checkout test (SELECT 1)",
     r"ConnectionManager<.*as r2d2::ManageConnection>::is_valid|PoolableConnection>::ping|AsyncDieselConnectionManager<.*>::recycle|ManageConnection.*ping"),
    ("pool checkout (r2d2 / deadpool, path and message cache, tenant log, metrics)",
     r"SharedPool::checkout|SharedPool::get_for|SharedPool::handed_out|checkout_from_pool|r2d2::Pool<.*>::get|r2d2::Pool<.*>::try_get|r2d2::Pool<.*>::get_timeout|deadpool::managed|AsyncSharedPool::checkout|AsyncSharedPool::obtain|observe::checkout|observe::tenant_recorded|observe::pool_size"),
    ("return to the pool (drop)",
     r"drop_in_place<.*TenantConnection|drop_in_place<.*PooledConnection|drop_in_place<.*Object<|has_broken|r2d2::Pool<.*>::put_back|TenantConnection as core::ops::drop::Drop|AsyncTenantConnection as core::ops::drop::Drop"),
    ("the page's 3 queries (diesel, libpq / tokio-postgres)",
     r"app::page_data|on_async::page_data|app::on_async::account_with_plan|on_async::plans"),
    ("tokio-postgres connection task (socket I/O of diesel-async)",
     r"tokio_postgres::connection::Connection"),
    ("render the page", r"app::render_page|app::escape"),
    ("BEGIN READ ONLY / COMMIT and the retry wrapper",
     r"retry::attempt|retry::run_unit|read_retrying|blocking_unit|async_unit|AnsiTransactionManager|TransactionBuilder|build_transaction|plain_page_tx|plain_async_page_tx|AnsiTransactionManager"),
    ("handler glue (extractors, state clones, spawn_blocking)",
     r"bench_saas_zipf::app::tenant_page|bench_saas_zipf::plain_|AppState as core::clone::Clone|spawn_blocking|blocking::pool|BlockingTask"),
]
LAYERS = [
    ("tenant routing (TenantLayer, resolver, CurrentTenant)",
     r"appschema_axum::TenantService|appschema_axum::resolve|resolve::Resolver|normalize_host|appschema_axum::source|CurrentTenant|PublicName::new"),
    ("apex_or_tenants (apex / tenant split)", r"apex_or_tenants"),
    ("log_request middleware and tracing", r"app::log_request|tracing::|tracing_core::"),
    ("hyper (HTTP/1 parse, write)", r"hyper::|hyper_util::"),
    ("axum routing", r"axum::|axum_core::|tower::"),
    ("tokio runtime (scheduler, I/O driver)", r"tokio::"),
]
RULES = COMPONENTS + LAYERS
COMPILED_COMPONENTS = [(name, re.compile(pat)) for name, pat in COMPONENTS]
COMPILED_LAYERS = [(name, re.compile(pat)) for name, pat in LAYERS]


def classify(frames):
    for name, pat in COMPILED_COMPONENTS:
        if any(pat.search(sym) for sym in frames):
            return name
    for sym in frames:  # leaf first
        for name, pat in COMPILED_LAYERS:
            if pat.search(sym):
                return name
    return "other (kernel, libc, threads outside these)"


def main():
    requests = float(sys.argv[1])
    cpu = float(sys.argv[2])
    counts = Counter()
    frames = []
    total = 0
    for line in list(sys.stdin) + [""]:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                counts[classify(frames)] += 1
                total += 1
            frames = []
            continue
        if line.startswith("\t") or line.startswith(" "):
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
    us = lambda n: n / total * cpu / requests * 1e6
    for name, _ in RULES + [("other (kernel, libc, threads outside these)", None)]:
        if counts[name]:
            print(f"{us(counts[name]):7.1f} µs  {counts[name] / total * 100:5.1f} %  {name}")
    print(f"{cpu / requests * 1e6:7.1f} µs  total client CPU per request ({total} samples)")


main()
