#!/bin/bash
# Server CPU per statement of the SharedPool checkout message (BENCHMARKS.md,
# "Tenant affinity and the bound", item "what a checkout costs"). Starts a
# throwaway PostgreSQL 15 (as user postgres when run as root), then for each
# statement runs pgbench (one client, simple protocol) on messages of 20
# copies of it (`\;`: one message) and reads the CPU the server's backends
# used (the postmaster's cutime + cstime: every backend has exited by then).
# Prints µs of server CPU per statement, one column per round.
# Usage: scripts/bench_checkout_statements.sh [ROUNDS] [MESSAGES]
set -euo pipefail
ROUNDS=${1:-4}; N=${2:-2000}
BIN=/usr/lib/postgresql/15/bin
DIR=$(mktemp -d); PORT=$((50000 + RANDOM % 10000))
as_pg() { if [ "$(id -u)" = 0 ]; then chown -R postgres "$DIR"; su postgres -c "$*"; else sh -c "$*"; fi; }
as_pg "$BIN/initdb -D $DIR/data -A trust >/dev/null && $BIN/pg_ctl -D $DIR/data -o '-p $PORT -k $DIR -c listen_addresses=' -l $DIR/log -w start >/dev/null"
trap 'as_pg "$BIN/pg_ctl -D $DIR/data -m immediate stop >/dev/null"; rm -rf "$DIR"' EXIT
PSQL="psql -h $DIR -p $PORT -U postgres -qAt"
$PSQL -c "CREATE SCHEMA t1; CREATE TABLE t1.items (id int PRIMARY KEY)"
CHECK_HEAD="WHEN pg_catalog.statement_timestamp() OPERATOR(pg_catalog.<>) pg_catalog.transaction_timestamp() THEN pg_catalog.current_setting(E'appschema: x') WHEN session_user OPERATOR(pg_catalog.<>) E'postgres'::pg_catalog.name OR current_user OPERATOR(pg_catalog.<>) E'postgres'::pg_catalog.name OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN pg_catalog.current_setting(E'appschema: y') WHEN pg_catalog.pg_advisory_unlock_all() IS NULL THEN NULL WHEN pg_catalog.setseed(\$1::pg_catalog.float8 OPERATOR(pg_catalog./) 9007199254740992.0) IS NULL THEN NULL"
OLD_NSP="WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) \$2::pg_catalog.name) OR NOT pg_catalog.has_schema_privilege(\$2, 'USAGE') THEN pg_catalog.current_setting(E'appschema: z')"
NEW_NSP="WHEN pg_catalog.has_schema_privilege(pg_catalog.to_regnamespace(pg_catalog.quote_ident(\$2))::pg_catalog.oid, 'USAGE') IS NOT TRUE THEN pg_catalog.current_setting(E'appschema: z')"
# A script: prepare the check once per connection (pgbench client variables
# persist), then one message of 20 copies of $2.
script() {
  local f=$DIR/$1.sql body=$3 out=""
  printf '\\if :done = 0\nPREPARE sw (pg_catalog.int8, pg_catalog.text) AS SELECT CASE %s END;\n\\set done 1\n\\endif\n' "$body" > "$f"
  for _ in $(seq 20); do out="$out$2 \\; "; done
  echo "${out}SELECT 1;" >> "$f"
}
EX="EXECUTE sw(0001234567890123, E't1')"
script select_1 "SELECT 1" "$CHECK_HEAD $NEW_NSP"
script reset_all "RESET ALL" "$CHECK_HEAD $NEW_NSP"
script close_all "CLOSE ALL" "$CHECK_HEAD $NEW_NSP"
script discard_temp "DISCARD TEMP" "$CHECK_HEAD $NEW_NSP"
script discard_sequences "DISCARD SEQUENCES" "$CHECK_HEAD $NEW_NSP"
script set_search_path 'SET search_path = "t1", "public"' "$CHECK_HEAD $NEW_NSP"
script check_before "$EX" "$CHECK_HEAD $OLD_NSP"
script check_after "$EX" "$CHECK_HEAD $NEW_NSP"
script execute_trivial "$EX" "WHEN \$1 IS NULL OR \$2 IS NULL THEN NULL"
PM=$(head -1 "$DIR/data/postmaster.pid")
cpu() { awk '{print $16 + $17}' "/proc/$PM/stat"; }
declare -A row
NAMES="select_1 reset_all close_all discard_temp discard_sequences set_search_path check_before check_after execute_trivial"
for _ in $(seq "$ROUNDS"); do
  for s in $NAMES; do
    a=$(cpu)
    $BIN/pgbench -h "$DIR" -p "$PORT" -U postgres -n -M simple -D done=0 -c1 -t "$N" -f "$DIR/$s.sql" postgres >/dev/null 2>&1
    sleep 0.2; b=$(cpu)
    # clock ticks (1/100 s) -> µs per message -> µs per statement (20 + 1 SELECT 1)
    row[$s]="${row[$s]:-} $(awk -v t=$((b - a)) -v n="$N" 'BEGIN { printf "%.1f", t * 10000 / n / 20 }')"
  done
done
echo "µs of server CPU per statement (20 per message; the message's trailing SELECT 1 included), per round:"
for s in $NAMES; do echo "$s:${row[$s]}"; done
