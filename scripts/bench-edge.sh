#!/usr/bin/env bash
# What the edge costs: the service (release build) on loopback, measured
# straight and through HAProxy running the project's own edge/haproxy.cfg,
# one after the other in one run, RUNS times (default 2) so the noise shows.
# Only the backend's address differs from the deployed edge: its one server
# is the loopback service instead of the tasks the swarm's DNS lists; the
# timeouts, retries, health checks (GET /readyz every second) and rules are
# the file's. Prints one markdown table; bounded in count and time.
#
#   scripts/bench-edge.sh
#   HEAD_BIN=target/release/todobackend REQUESTS=20000 RUNS=3 scripts/bench-edge.sh
#
# Needs haproxy (Debian's package: `apt-get install haproxy`; the package's
# own service is not used), ab (apache2-utils), curl. Loopback only.
set -euo pipefail

REQUESTS=${REQUESTS:-20000}
RUNS=${RUNS:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/bench-edge.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v haproxy >/dev/null || { echo "bench-edge: haproxy is missing: apt-get install haproxy" >&2; exit 1; }
command -v ab >/dev/null || { echo "bench-edge: ab is missing: apt-get install apache2-utils" >&2; exit 1; }

if [ -z "${HEAD_BIN:-}" ]; then
  (cd "$root" && cargo build --release -p todobackend --locked >&2)
  HEAD_BIN=$root/target/release/todobackend
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ab's requests/s, p50 and p99 (ms), and its failed and non-2xx counts (not
# its "Length" failures: POST answers differ in length by their ids).
ab_figures() {
  awk '/Requests per second/ {rps=$4} /^  50%/ {p50=$2} /^  99%/ {p99=$2} /Non-2xx responses/ {bad=$3}
       /\(Connect: / {gsub(/[(),]/, ""); failed=$2 + $4 + $8}
       END {if (rps == "") print "- - - -"; else printf "%.0f %s %s %d\n", rps, p50, p99, failed + bad}'
}

app_port=$(free_port)
edge_port=$(free_port)
"$HEAD_BIN" migrate --db "$work/db.sqlite3" >/dev/null 2>&1
TODOBACKEND_DB=$work/db.sqlite3 "$HEAD_BIN" serve --listen "127.0.0.1:$app_port" 2>"$work/serve.log" &
# The deployed configuration, its backend pointed at the loopback service,
# its public listener on a loopback port (and the in-network one dropped).
sed -e "s|^    server-template app .*|    server app1 127.0.0.1:$app_port|" \
    -e "s|^    bind :8080|    bind 127.0.0.1:$edge_port|" \
    -e "/^    bind :8000/d" \
    "$root/edge/haproxy.cfg" > "$work/haproxy.cfg"
haproxy -W -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$edge_port/todos" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$edge_port/todos" >/dev/null || { echo "bench-edge: the edge does not answer:"; cat "$work/haproxy.log"; exit 1; } >&2
printf '{"title":"bench"}' > "$work/post.json"
curl -sf -X POST -H 'Content-Type: application/json' --data @"$work/post.json" "http://127.0.0.1:$app_port/todos" >/dev/null

echo "| run | path | GET /todos/1, new connection each: req/s | p50 ms | p99 ms | keep-alive (ab -k): req/s | p50 ms | p99 ms | POST req/s | POST p99 ms | failed or non-2xx |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for run in $(seq "$RUNS"); do
  for path in straight edge; do
    if [ "$path" = straight ]; then port=$app_port; else port=$edge_port; fi
    url=http://127.0.0.1:$port
    read -r rps p50 p99 bad1 < <(timeout 120 ab -q -n "$REQUESTS" -c 50 "$url/todos/1" 2>&1 | ab_figures)
    read -r krps kp50 kp99 bad2 < <(timeout 120 ab -q -k -n "$REQUESTS" -c 50 "$url/todos/1" 2>&1 | ab_figures)
    read -r prps _ pp99 bad3 < <(timeout 120 ab -q -n "$((REQUESTS / 4))" -c 50 -p "$work/post.json" -T application/json "$url/todos" 2>&1 | ab_figures)
    echo "| $run | $path | $rps | $p50 | $p99 | $krps | $kp50 | $kp99 | $prps | $pp99 | $((bad1 + bad2 + bad3)) |"
  done
done
