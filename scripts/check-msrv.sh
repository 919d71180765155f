#!/usr/bin/env bash
# MSRV check (issue 28): fails when a dependency locked in Cargo.lock, for
# this host's platform (normal, build and dev dependencies alike), declares a
# `rust-version` above the workspace's. The fix: `cargo update -p NAME
# --precise OLDER` (the resolver prefers compatible versions, see
# .cargo/config.toml), or raise `rust-version` in Cargo.toml if the newer
# version is needed.
#
# What it does not check: that the code compiles with that toolchain. Only
# one toolchain is installed where CI runs and none can be fetched (no rustup
# network), so compiling with the MSRV toolchain itself is not possible here.
# Clippy's `incompatible_msrv` lint (on in `.ci/run`'s clippy step) flags
# standard library items stabilised after the MSRV; language features newer
# than the MSRV are not caught.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml | head -n1)
if [ -z "$msrv" ]; then
  echo "check-msrv: no rust-version in [workspace.package] of Cargo.toml" >&2
  exit 1
fi
host=$(rustc -vV | sed -n 's/^host: //p')

# `cargo metadata` prints each package's manifest_path, then its
# rust_version (a string or null); pair them up.
too_new=$(cargo metadata --locked --format-version 1 --filter-platform "$host" \
  | grep -o '"manifest_path":"[^"]*"\|"rust_version":\("[^"]*"\|null\)' \
  | sed -e 's/^"manifest_path":"\(.*\)"$/M \1/' -e 's/^"rust_version":"\(.*\)"$/R \1/' -e 's/^"rust_version":null$/R -/' \
  | awk -v msrv="$msrv" '
      function newer(a, b,   x, y, i, n) {
        n = split(a, x, "."); split(b, y, ".")
        for (i = 1; i <= 3; i++) { if ((x[i] + 0) != (y[i] + 0)) return (x[i] + 0) > (y[i] + 0) }
        return 0
      }
      $1 == "M" { path = $2 }
      $1 == "R" && $2 != "-" && newer($2, msrv) { print "  " path " needs Rust " $2 }')
if [ -n "$too_new" ]; then
  echo "check-msrv: locked dependencies need a newer Rust than rust-version = \"$msrv\":" >&2
  echo "$too_new" >&2
  echo "check-msrv: pin an older version (cargo update -p NAME --precise VERSION) or raise rust-version" >&2
  exit 1
fi
echo "check-msrv: every locked dependency builds with Rust $msrv"
