#!/usr/bin/env bash
# The service's cold release build, side by side: for each commit named (default
# the commit before the cold-build cuts, a2e5200, and HEAD), its tree is
# exported into a directory of its own with an empty target directory, and
# the build that `cargo xtask build` runs (static: `--release --target
# <arch>-unknown-linux-gnu` with crt-static) runs there, one commit after
# the other. Prints one markdown row per commit: crates compiled, CPU (user +
# system, from /usr/bin/time), wall, and the binary's size. Nothing else runs in
# between; on a shared machine compare the CPU columns, not the wall.
#
#   scripts/bench-service-build.sh                 # a2e5200 and HEAD
#   scripts/bench-service-build.sh A B C           # any commits
#
# The registry's sources must be downloaded already (a fresh machine's first
# `cargo fetch`); the build is then offline and measures compiling only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- a2e5200 HEAD
target=$(uname -m)-unknown-linux-gnu
flags_var=CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_RUSTFLAGS
command -v /usr/bin/time >/dev/null || { echo "error: /usr/bin/time is missing: apt-get install time" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-service-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "| commit | crates compiled | CPU user + sys | wall | binary |"
echo "|---|---|---|---|---|"
for commit in "$@"; do
  id=$(git -C "$root" rev-parse --short "$commit")
  tree=$work/$id
  mkdir -p "$tree"
  git -C "$root" archive "$id" | tar -x -C "$tree"
  echo "building $id cold in $tree" >&2
  (cd "$tree" && /usr/bin/time -f '%U %S %e' -o "$work/$id.time" \
    env "$flags_var=-C target-feature=+crt-static" \
    cargo build --release -p todobackend --locked --offline --target "$target" 2>"$work/$id.log") || {
    echo "error: the build of $id failed; its log: $work/$id.log" >&2
    tail -20 "$work/$id.log" >&2
    trap - EXIT
    exit 1
  }
  read -r user sys wall <"$work/$id.time"
  crates=$(grep -c '^ *Compiling ' "$work/$id.log" || true)
  size=$(stat -c %s "$tree/target/$target/release/todobackend")
  printf '| %s | %s | %.0f + %.0f = %.0f s | %.0f s | %.2f MiB |\n' \
    "$id" "$crates" "$user" "$sys" "$(echo "$user + $sys" | bc)" "$wall" "$(echo "$size / 1048576" | bc -l)"
  rm -rf "$tree"
done
