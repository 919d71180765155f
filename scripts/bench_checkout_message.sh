#!/bin/bash
# Server CPU per checkout MESSAGE (BENCHMARKS.md, "Where a one-tenant
# request's time goes"): each pgbench transaction is one simple-protocol
# message, as a checkout sends it, followed by a one-row select on the
# tenant's table in a message of its own (the request's first query after
# the switch). Starts a throwaway PostgreSQL 15 (as user postgres when run as
# root); one client; the server's CPU is the postmaster's cutime + cstime
# once pgbench's backend has exited. Prints µs of server CPU per message pair,
# one column per round (rounds interleave the variants).
# Usage: scripts/bench_checkout_message.sh [ROUNDS] [MESSAGES]
set -euo pipefail
ROUNDS=${1:-5}; N=${2:-5000}
BIN=/usr/lib/postgresql/15/bin
DIR=$(mktemp -d); PORT=$((50000 + RANDOM % 10000))
as_pg() { if [ "$(id -u)" = 0 ]; then chown -R postgres "$DIR"; su postgres -c "$*"; else sh -c "$*"; fi; }
as_pg "$BIN/initdb -D $DIR/data -A trust >/dev/null && $BIN/pg_ctl -D $DIR/data -o '-p $PORT -k $DIR -c listen_addresses=' -l $DIR/log -w start >/dev/null"
trap 'as_pg "$BIN/pg_ctl -D $DIR/data -m immediate stop >/dev/null"; rm -rf "$DIR"' EXIT
PSQL="psql -h $DIR -p $PORT -U postgres -qAt"
$PSQL -c "CREATE SCHEMA t1; CREATE TABLE t1.items (id int PRIMARY KEY); INSERT INTO t1.items VALUES (1)"
RESET="RESET ALL \\; CLOSE ALL \\; DISCARD TEMP \\; DISCARD SEQUENCES \\;"
OPEN="WHEN pg_catalog.statement_timestamp() OPERATOR(pg_catalog.<>) pg_catalog.transaction_timestamp() THEN pg_catalog.current_setting(E'appschema: x')"
ROLE="session_user OPERATOR(pg_catalog.<>) E'postgres'::pg_catalog.name OR current_user OPERATOR(pg_catalog.<>) E'postgres'::pg_catalog.name"
LISTENING="OR EXISTS (SELECT FROM pg_catalog.pg_listening_channels())"
TAIL="THEN pg_catalog.current_setting(E'appschema: y') WHEN pg_catalog.pg_advisory_unlock_all() IS NULL THEN NULL WHEN pg_catalog.setseed(\$1::pg_catalog.float8 OPERATOR(pg_catalog./) 9007199254740992.0) IS NULL THEN NULL WHEN pg_catalog.has_schema_privilege(pg_catalog.to_regnamespace(pg_catalog.quote_ident(\$2))::pg_catalog.oid, 'USAGE') IS NOT TRUE THEN pg_catalog.current_setting(E'appschema: z')"
SET='SET search_path = "t1", "public"'
EX="EXECUTE sw(0001234567890123, E't1')"
# script NAME CHECK_BODY MESSAGE: prepare the check once per connection
# (pgbench client variables persist), then the message, then the query.
script() {
  local f=$DIR/$1.sql
  printf '\\if :done = 0\nPREPARE sw (pg_catalog.int8, pg_catalog.text) AS SELECT CASE %s END;\n\\set done 1\n\\endif\n' "$2" > "$f"
  printf '%s;\nSELECT id FROM items WHERE id = 1;\n' "$3" >> "$f"
}
# The r2d2 / diesel-async baselines: SELECT 1 on a connection already on t1.
printf '\\if :done = 0\nSET search_path = "t1", "public";\n\\set done 1\n\\endif\nSELECT 1;\nSELECT id FROM items WHERE id = 1;\n' > "$DIR/select_1.sql"
script current "$OPEN WHEN $ROLE $LISTENING $TAIL" "$RESET $EX \\; $SET"
script unlisten "$OPEN WHEN $ROLE $TAIL" "$RESET UNLISTEN * \\; $EX \\; $SET"
# The check as a literal SELECT (no PREPARE), with and without the LISTEN
# test (then UNLISTEN * unconditionally).
LIT_TAIL=$(printf '%s' "$TAIL" | sed "s/\\\$1/0001234567890123/; s/\\\$2/E't1'/")
script inline "$OPEN" "$RESET SELECT CASE $OPEN WHEN $ROLE $LISTENING $LIT_TAIL END \\; $SET"
script inline_unlisten "$OPEN" "$RESET UNLISTEN * \\; SELECT CASE $OPEN WHEN $ROLE $LIT_TAIL END \\; $SET"
# A read-only unit's first two messages: the checkout, then BEGIN READ ONLY
# in a message of its own (as now), or appended to the checkout's message;
# then the query and COMMIT.
printf '\\if :done = 0\nPREPARE sw (pg_catalog.int8, pg_catalog.text) AS SELECT CASE %s END;\n\\set done 1\n\\endif\n%s;\nBEGIN READ ONLY;\nSELECT id FROM items WHERE id = 1;\nCOMMIT;\n' "$OPEN WHEN $ROLE $LISTENING $TAIL" "$RESET $EX \\; $SET" > "$DIR/begin_apart.sql"
printf '\\if :done = 0\nPREPARE sw (pg_catalog.int8, pg_catalog.text) AS SELECT CASE %s END;\n\\set done 1\n\\endif\n%s;\nSELECT id FROM items WHERE id = 1;\nCOMMIT;\n' "$OPEN WHEN $ROLE $LISTENING $TAIL" "$RESET $EX \\; $SET \\; BEGIN READ ONLY" > "$DIR/begin_merged.sql"
# The same, with the check as the library now prepares it: it also refuses
# a message whose transaction began with other than the default
# characteristics (what makes the appended BEGIN sound).
CHARS="OR (pg_catalog.current_setting('transaction_isolation') OPERATOR(pg_catalog.<>) pg_catalog.current_setting('default_transaction_isolation') OR pg_catalog.current_setting('transaction_deferrable') OPERATOR(pg_catalog.<>) pg_catalog.current_setting('default_transaction_deferrable') OR pg_catalog.current_setting('transaction_read_only')::pg_catalog.bool OPERATOR(pg_catalog.<>) (pg_catalog.current_setting('default_transaction_read_only')::pg_catalog.bool OR pg_catalog.pg_is_in_recovery()))"
printf '\\if :done = 0\nPREPARE sw (pg_catalog.int8, pg_catalog.text) AS SELECT CASE %s END;\n\\set done 1\n\\endif\n%s;\nSELECT id FROM items WHERE id = 1;\nCOMMIT;\n' "$OPEN WHEN $ROLE $LISTENING $CHARS $TAIL" "$RESET $EX \\; $SET \\; BEGIN READ ONLY" > "$DIR/begin_merged_checked.sql"
[ -n "${MORE:-}" ] && {
script reset_set "$OPEN" "$RESET $SET"
script check_set "$OPEN WHEN $ROLE $LISTENING $TAIL" "$EX \\; $SET"
script no_listen_test "$OPEN WHEN $ROLE $TAIL" "$RESET $EX \\; $SET"
script trivial_check "WHEN \$1 IS NULL OR \$2 IS NULL THEN NULL" "$RESET $EX \\; $SET"
}
PM=$(head -1 "$DIR/data/postmaster.pid")
cpu() { awk '{print $16 + $17}' "/proc/$PM/stat"; }
declare -A row
NAMES="${ONLY:-select_1 current unlisten inline inline_unlisten begin_apart begin_merged begin_merged_checked${MORE:+ reset_set check_set no_listen_test trivial_check}}"
for _ in $(seq "$ROUNDS"); do
  for s in $NAMES; do
    a=$(cpu)
    $BIN/pgbench -h "$DIR" -p "$PORT" -U postgres -n -M simple -D done=0 -c1 -t "$N" -f "$DIR/$s.sql" postgres >/dev/null 2>&1
    sleep 0.2; b=$(cpu)
    row[$s]="${row[$s]:-} $(awk -v t=$((b - a)) -v n="$N" 'BEGIN { printf "%.1f", t * 10000 / n }')"
  done
done
echo "µs of server CPU per checkout message + one-row select, per round (load: $(cut -d' ' -f1-3 /proc/loadavg)):"
for s in $NAMES; do echo "$s:${row[$s]}"; done
