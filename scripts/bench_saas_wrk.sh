#!/bin/sh
# The saas app's `GET /` under wrk with Zipf tenant popularity over N tenants
# (default 1,000), tenant affinity off/on x bound 500/none, sync and async,
# against the same app on one tenant, the floor (plain r2d2 / deadpool with a
# bare SET search_path per request) and the single-tenant page on plain
# r2d2 / diesel-async, in one command. See appschema-bench/src/bin/bench_saas_zipf.rs.
# Usage: scripts/bench_saas_wrk.sh [SIZES...]   (default: 1000)
# Environment: ROUNDS (default 5), SECONDS per wrk run (default 5).
set -eu
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed on PATH (apt-get install wrk)" >&2; exit 1; }
exec cargo run --release -p appschema-bench --bin bench_saas_zipf --features axum,async -- "$@"
