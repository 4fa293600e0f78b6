#!/usr/bin/env bash
# A newcomer's first run, side by side: for each commit named (default the
# commit before the cold-build cuts, a2e5200, and HEAD), a fresh clone with an
# empty target directory, then `cargo xtask release` there, timed whole: the
# light xtask's build, the service's static release build, the image, the
# migrations, the app and the acceptance suite, until `App running at ...`.
# One commit after the other, nothing else started in between; each clone's
# app is then removed with `cargo xtask clean`, and its images with it, since
# the clone goes too (they carry the label xtask.local-project=<dir>-local,
# settings.rs's LOCAL_PROJECT_LABEL). Prints one markdown row per commit:
# CPU (user + system of cargo, rustc, cc and the xtask, from /usr/bin/time;
# the docker engine's own work is not in it), wall, and the crates compiled.
#
#   scripts/bench-first-release.sh               # a2e5200 and HEAD
#   scripts/bench-first-release.sh A B           # any commits
#
# Offline (CARGO_NET_OFFLINE): the registry's sources must be downloaded
# already (`cargo fetch` once), so only compiling and running are measured.
# Needs a running Docker engine and docker-compose, like `cargo xtask release`.
# Touches no AWS: the AWS variables point at loopback, and ECR_REGISTRY is set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- a2e5200 HEAD
command -v /usr/bin/time >/dev/null || { echo "error: /usr/bin/time is missing: apt-get install time" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers: start dockerd (bash .ci/run starts one)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/bench-first-release.XXXXXX")
clones=()
cleanup() {
  for clone in "${clones[@]}"; do
    (cd "$clone" && cargo xtask clean >/dev/null 2>&1) || echo "warning: cargo xtask clean failed in $clone" >&2
    images=$(docker images --quiet --filter "label=xtask.local-project=$(basename "$clone")-local" | sort -u)
    [ -z "$images" ] || docker image rm --force $images >/dev/null || echo "warning: could not remove $(basename "$clone")'s images" >&2
  done
  rm -rf "$work"
}
trap cleanup EXIT

export CARGO_NET_OFFLINE=true
export ECR_REGISTRY=127.0.0.1:9 AWS_ENDPOINT_URL=http://127.0.0.1:9 AWS_EC2_METADATA_DISABLED=true \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
unset CARGO_TARGET_DIR APP_VERSION

echo "| commit | CPU user + sys | wall | crates compiled |"
echo "|---|---|---|---|"
for commit in "$@"; do
  id=$(git -C "$root" rev-parse --short "$commit")
  clone=$work/$id
  git clone --quiet --no-local "$root" "$clone"
  git -C "$clone" checkout --quiet --detach "$id"
  clones+=("$clone")
  echo "first release of $id in $clone" >&2
  (cd "$clone" && /usr/bin/time -f '%U %S %e' -o "$work/$id.time" cargo xtask release >"$work/$id.out" 2>"$work/$id.log") || {
    echo "error: cargo xtask release of $id failed; the end of its log:" >&2
    tail -20 "$work/$id.log" >&2
    exit 1
  }
  grep -q '^App running at ' "$work/$id.out" || { echo "error: $id's release printed no 'App running at'" >&2; exit 1; }
  read -r user sys wall <"$work/$id.time"
  crates=$(grep -c '^ *Compiling ' "$work/$id.log" || true)
  printf '| %s | %.0f + %.0f = %.0f s | %.0f s | %s |\n' \
    "$id" "$user" "$sys" "$(echo "$user + $sys" | bc)" "$wall" "$crates"
done
