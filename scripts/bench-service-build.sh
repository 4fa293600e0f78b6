#!/usr/bin/env bash
# The service's cold release build, side by side: for each commit named (default
# the commit before the service's libraries, f1ea4a8, and HEAD), its tree is
# exported into a directory of its own with an empty target directory, and
# `cargo build --release -p todobackend --locked` runs there, one commit after
# the other. Prints one markdown row per commit: crates compiled, CPU (user +
# system, from /usr/bin/time), wall, and the binary's size. Nothing else runs in
# between; on a shared machine compare the CPU columns, not the wall.
#
#   scripts/bench-service-build.sh                 # f1ea4a8 and HEAD
#   scripts/bench-service-build.sh A B C           # any commits
#
# The registry's sources must be downloaded already (a fresh machine's first
# `cargo fetch`); the build is then offline and measures compiling only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- f1ea4a8 HEAD
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
    cargo build --release -p todobackend --locked --offline 2>"$work/$id.log") || {
    echo "error: the build of $id failed; its log: $work/$id.log" >&2
    tail -20 "$work/$id.log" >&2
    trap - EXIT
    exit 1
  }
  read -r user sys wall <"$work/$id.time"
  crates=$(grep -c '^ *Compiling ' "$work/$id.log" || true)
  size=$(stat -c %s "$tree/target/release/todobackend")
  printf '| %s | %s | %.0f + %.0f = %.0f s | %.0f s | %.2f MiB |\n' \
    "$id" "$crates" "$user" "$sys" "$(echo "$user + $sys" | bc)" "$wall" "$(echo "$size / 1048576" | bc -l)"
  rm -rf "$tree"
done
