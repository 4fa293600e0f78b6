#!/usr/bin/env bash
# Measures the two costs of the xtask that its users feel (issue 6) and prints
# them as a table: median, min and max, with ratios against references
# measured in the same run where a reference can be measured.
#
#   cold build: an empty target directory → `cargo xtask --help` answers
#               (the light xtask), and then → the first AWS/Docker task can
#               run (xtask-cloud on top, what CI pays in all)
#   warm run:   `cargo xtask version` on an up-to-date build, the xtask binary
#               alone, and `git rev-parse --short HEAD` (what the Makefile ran)
#
# Usage: scripts/bench.sh [--cold-runs N] [--warm-runs N] [--skip-cold]
# Needs hyperfine and python3 (Debian: apt-get install hyperfine python3).
set -euo pipefail
cd "$(dirname "$0")/.."

cold_runs=3
warm_runs=50
skip_cold=false
while [ $# -gt 0 ]; do
  case "$1" in
    --cold-runs) cold_runs=$2; shift 2 ;;
    --warm-runs) warm_runs=$2; shift 2 ;;
    --skip-cold) skip_cold=true; shift ;;
    *) echo "error: unknown argument $1: use --cold-runs N, --warm-runs N or --skip-cold" >&2; exit 1 ;;
  esac
done
command -v hyperfine >/dev/null || { echo "error: hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cold_target="$PWD/target/bench-cold"

if [ "$skip_cold" = false ]; then
  echo "==> cold build, $cold_runs runs (each deletes $cold_target)" >&2
  hyperfine --runs "$cold_runs" --export-json "$out/cold.json" \
    --prepare "rm -rf '$cold_target'" \
    --command-name "cold: cargo xtask --help" \
    "CARGO_TARGET_DIR='$cold_target' cargo xtask --help >/dev/null" >&2
  # What the first AWS/Docker task costs on top, from empty, as a user or CI pays it.
  hyperfine --runs "$cold_runs" --export-json "$out/cloud.json" \
    --prepare "rm -rf '$cold_target'" \
    --command-name "cold: cargo xtask --help, then xtask-cloud" \
    "CARGO_TARGET_DIR='$cold_target' cargo xtask --help >/dev/null && CARGO_TARGET_DIR='$cold_target' cargo build --quiet --package xtask-cloud" >&2
  rm -rf "$cold_target"
fi

echo "==> warm run, $warm_runs runs each" >&2
cargo build --quiet --package xtask
# `version` proves a clean checkout from the index's stat data; entries written
# in the same instant as the index (right after a checkout) are racy and get
# libgit2's full status until git refreshes the index, as any `git status` does.
# Measure the checkout as it usually is, and say when it is not clean.
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "warning: uncommitted changes: 'xtask version' takes its slow path (full status)" >&2
fi
hyperfine --warmup 3 --runs "$warm_runs" -N --export-json "$out/warm.json" \
  --command-name "git rev-parse --short HEAD" "git rev-parse --short HEAD" \
  --command-name "xtask version (binary)" "target/debug/xtask version" \
  --command-name "cargo xtask version" "cargo xtask version" >&2

python3 - "$out" "$(nproc)" <<'PY'
import json, os, sys
out, cores = sys.argv[1], sys.argv[2]
rows = []
for name in ("cold", "cloud", "warm"):
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        rows += json.load(open(path))["results"]
git = next((r for r in rows if r["command"] == "git rev-parse --short HEAD"), None)
def ms(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"
print(f"| measure ({cores} cores) | median | min | max | against |")
print("|---|---|---|---|---|")
for r in rows:
    cmd, median = r["command"], r["median"]
    if cmd.startswith("cold: cargo xtask --help, then"):
        against = f"{median / 157:.2f}x the 157 s reference; not in the target (paid on the first AWS/Docker task)"
    elif cmd.startswith("cold"):
        against = f"{median / 60:.2f}x the 60 s target; {median / 157:.2f}x the 157 s default-features reference"
    elif git and cmd != git["command"]:
        against = f"{median / git['median']:.2f}x git rev-parse"
    else:
        against = "reference"
    print(f"| {cmd} | {ms(median)} | {ms(r['min'])} | {ms(r['max'])} | {against} |")
PY
