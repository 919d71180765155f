#!/bin/sh
# The Debian/Ubuntu packages appschema's README commands need (`cargo run
# --example saas --features axum` and `cargo test --workspace --all-features`)
# besides a Rust toolchain. The one list: the README's `apt-get install` line
# names exactly these (tests/readme.rs checks it) and `.ci/run` runs this
# script.
#
#   postgresql    server binaries (initdb, postgres, pg_dump) for the
#                 throwaway PostgreSQL the examples and tests start
#   libpq-dev     libpq and pg_config, for diesel's pq-sys
#   libclang-dev  libclang and its headers, for pg_query's bindgen
#   pgbouncer     the transaction-pooling tests run a throwaway PgBouncer
#   gcc libc6-dev a C compiler and libc headers: rustc links with `cc`, and
#                 pg_query compiles libpg_query's C sources
#   openssl       the TLS tests generate their CA and server certificate
#                 with it (appschema_tempdb::TempTlsCluster)
#   curl ca-certificates
#                 cargo's downloads from crates.io (HTTPS), rustup's
#                 installer, and the curl commands the saas example prints
#
# Usage: scripts/install-deps.sh          install what is missing
#        scripts/install-deps.sh --list   print the list, one line, and exit
#
# Installs only what is missing (nothing at all, not even `apt-get update`,
# when everything is there). As root it runs apt-get directly; otherwise
# through sudo.
set -eu

PACKAGES="postgresql libpq-dev libclang-dev pgbouncer gcc libc6-dev openssl curl ca-certificates"

case "${1:-}" in
  --list) echo "$PACKAGES"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--list]" >&2; exit 2 ;;
esac

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=""
for pkg in $PACKAGES; do
  installed "$pkg" || missing="$missing $pkg"
done
if [ -z "$missing" ]; then
  echo "install-deps: all present ($PACKAGES)"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=""
elif command -v sudo >/dev/null 2>&1; then
  as_root="sudo"
else
  echo "install-deps: need root (or sudo) to install:$missing" >&2
  exit 1
fi

echo "install-deps: installing$missing"
# `env` so the setting survives sudo's reset of the environment.
$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is intended
$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
