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
# Usage: scripts/bench.sh [--cold-runs N] [--warm-runs N] [--rounds N] [--skip-cold]
# Needs hyperfine and python3 (Debian: apt-get install hyperfine python3).
set -euo pipefail
cd "$(dirname "$0")/.."

cold_runs=3
warm_runs=50
rounds=5
skip_cold=false
while [ $# -gt 0 ]; do
  case "$1" in
    --cold-runs) cold_runs=$2; shift 2 ;;
    --warm-runs) warm_runs=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --skip-cold) skip_cold=true; shift ;;
    *) echo "error: unknown argument $1: use --cold-runs N, --warm-runs N, --rounds N or --skip-cold" >&2; exit 1 ;;
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

echo "==> warm run, $warm_runs runs each, in $rounds interleaved rounds" >&2
cargo build --quiet --package xtask
# `version` proves a clean checkout from the index's stat data; entries written
# in the same instant as the index (right after a checkout) are racy and get
# libgit2's full status until git refreshes the index, as any `git status` does.
# Measure the checkout as it usually is, and say when it is not clean.
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  echo "warning: uncommitted changes: 'xtask version' takes its slow path (full status)" >&2
fi
# The two binaries take turns, round after round: a shared machine's load
# drifts over a minute, and one long block of each would put the drift into
# the ratio. Each round's ratio compares runs made moments apart.
per_round=$(( (warm_runs + rounds - 1) / rounds ))
for round in $(seq "$rounds"); do
  hyperfine --warmup 3 --runs "$per_round" -N --export-json "$out/warm-$round.json" \
    --command-name "git rev-parse --short HEAD" "git rev-parse --short HEAD" \
    --command-name "xtask version (binary)" "target/debug/xtask version" >&2
done
hyperfine --warmup 3 --runs "$per_round" -N --export-json "$out/cargo.json" \
  --command-name "cargo xtask version" "cargo xtask version" >&2

python3 - "$out" "$(nproc)" "$rounds" <<'PY'
import json, os, statistics, sys
out, cores, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def ms(seconds):
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"
def row(name, times, against):
    print(f"| {name} | {ms(statistics.median(times))} | {ms(min(times))} | {ms(max(times))} | {against} |")
print(f"| measure ({cores} cores) | median | min | max | against |")
print("|---|---|---|---|---|")
for name in ("cold", "cloud"):
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        r = json.load(open(path))["results"][0]
        if name == "cloud":
            against = f"{r['median'] / 157:.2f}x the 157 s reference; not in the target (paid on the first AWS/Docker task)"
        else:
            against = f"{r['median'] / 60:.2f}x the 60 s target; {r['median'] / 157:.2f}x the 157 s default-features reference"
        row(r["command"], r["times"], against)
git, xtask, ratios = [], [], []
for round in range(1, rounds + 1):
    git_run, xtask_run = json.load(open(os.path.join(out, f"warm-{round}.json")))["results"]
    git += git_run["times"]
    xtask += xtask_run["times"]
    ratios.append(xtask_run["median"] / git_run["median"])
row("git rev-parse --short HEAD", git, "reference")
row("xtask version (binary)", xtask,
    f"{statistics.median(ratios):.2f}x git rev-parse (median of {rounds} rounds; {min(ratios):.2f}x to {max(ratios):.2f}x)")
cargo = json.load(open(os.path.join(out, "cargo.json")))["results"][0]
row("cargo xtask version", cargo["times"], f"{cargo['median'] / statistics.median(git):.2f}x git rev-parse")
PY
