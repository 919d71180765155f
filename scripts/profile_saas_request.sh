#!/bin/bash
# Where one request's CPU goes: the saas app's `GET /` for ONE tenant under
# wrk, sync and async, against the same page on plain r2d2 / diesel-async
# deadpool in the same read-only transaction. For each server, after a
# warm-up, one wrk run of SECONDS: requests/s, and CPU per request of the
# app process (user + system, /proc/<pid>/stat), of the PostgreSQL server
# (postmaster and backends) and of wrk itself.
#
# Usage: scripts/profile_saas_request.sh [BIN]
#   BIN: a bench_saas_zipf binary (default: target/release/examples/bench_saas_zipf,
#        built with `cargo build --release --example bench_saas_zipf --features axum,async`);
#        give two binaries as BIN=a:b to interleave a baseline and a candidate.
# Environment: SECONDS_PER_RUN (default 8), ROUNDS (default 3),
#   SERVERS (default "sync-app plain-r2d2-tx async-app plain-deadpool-tx"),
#   PERF=1: also `perf record --call-graph dwarf` the app process during each
#   run (perf.<label>.<tag>.data in PERF_DIR, default /tmp/profile_saas).
set -eu
cd "$(dirname "$0")/.."
BINS="${1:-${CARGO_TARGET_DIR:-target}/release/examples/bench_saas_zipf}"
SECS="${SECONDS_PER_RUN:-8}"
ROUNDS="${ROUNDS:-3}"
SERVERS="${SERVERS:-sync-app plain-r2d2-tx async-app plain-deadpool-tx}"
PERF_DIR="${PERF_DIR:-/tmp/profile_saas}"
LUA="examples/saas/zipf_hosts.lua"
HZ=$(getconf CLK_TCK)
mkdir -p "$PERF_DIR"

# utime + stime (+ cutime + cstime with $2 = all) of pid $1, in ticks.
ticks() { awk -v all="${2:-}" '{ t = $14 + $15; if (all != "") t += $16 + $17; print t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU ticks of the PostgreSQL server under bench pid $1: postmaster (with its
# reaped children) plus every live backend.
server_ticks() {
  local pm total=0 b
  pm=$(pgrep -P "$1" -x postgres | head -1)
  total=$(ticks "$pm" all)
  for b in $(pgrep -P "$pm"); do total=$((total + $(ticks "$b"))); done
  echo "$total"
}

declare -A PID PORT
TAGS=()
i=0
IFS=: read -ra BINLIST <<< "$BINS"
for bin in "${BINLIST[@]}"; do
  tag="b$i"; i=$((i + 1)); TAGS+=("$tag")
  log="$PERF_DIR/serve.$tag.log"
  SERVE_SECONDS=100000 "$bin" 100 > "$log" 2>&1 &
  PID[$tag]=$!
  until grep -q "^serving pid" "$log"; do
    kill -0 "${PID[$tag]}" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 1
  done
  while read -r _ label port; do PORT[$tag.$label]=$port; done < <(grep "^serving " "$log" | grep -v "^serving pid")
  echo "$tag = $bin (pid ${PID[$tag]})"
done
cleanup() { for t in "${TAGS[@]}"; do kill "${PID[$t]}" 2>/dev/null || true; done; }
trap cleanup EXIT

for t in "${TAGS[@]}"; do for s in $SERVERS; do
  wrk -t2 -c32 -d2s -s "$LUA" "http://127.0.0.1:${PORT[$t.$s]}/" -- z 1 zipf > /dev/null
done; done

echo "round server bin req/s app_us/req server_us/req wrk_us/req loadavg"
for round in $(seq 1 "$ROUNDS"); do
  for s in $SERVERS; do for t in "${TAGS[@]}"; do
    pid=${PID[$t]}
    a0=$(ticks "$pid"); s0=$(server_ticks "$pid")
    if [ "${PERF:-}" = 1 ]; then
      perf record -q -F 499 --call-graph dwarf,16384 -p "$pid" -o "$PERF_DIR/perf.$s.$t.data" -- sleep "$SECS" > /dev/null 2>&1 &
      perfpid=$!
    fi
    out=$(/usr/bin/time -f "wrkcpu %U %S" wrk -t2 -c32 -d"${SECS}s" -s "$LUA" "http://127.0.0.1:${PORT[$t.$s]}/" -- z 1 zipf 2>&1)
    a1=$(ticks "$pid"); s1=$(server_ticks "$pid")
    [ "${PERF:-}" = 1 ] && wait "$perfpid"
    rps=$(echo "$out" | awk '/^Requests\/sec:/ { print $2 }')
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then echo "wrk saw errors: $out" >&2; exit 1; fi
    wrkcpu=$(echo "$out" | awk '/^wrkcpu/ { print $2 + $3 }')
    n=$(awk -v r="$rps" -v s="$SECS" 'BEGIN { print r * s }')
    awk -v round="$round" -v s="$s" -v t="$t" -v r="$rps" -v n="$n" -v hz="$HZ" \
        -v a=$((a1 - a0)) -v db=$((s1 - s0)) -v w="$wrkcpu" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
      'BEGIN { printf "%s %s %s %.0f %.1f %.1f %.1f %s\n", round, s, t, r, a / hz / n * 1e6, db / hz / n * 1e6, w / n * 1e6, load }'
  done; done
done
