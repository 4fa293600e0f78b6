#!/usr/bin/env bash
# Side-by-side benchmark of the service on loopback: the commit before the
# hyper server (BASE, default a1f7941) and HEAD, built in release mode, in one
# run. Prints one table; every step is bounded in count and time.
#
#   scripts/bench-service.sh            # builds both (BASE in its own worktree)
#   BASE=a1f7941 BASE_BIN=... HEAD_BIN=... scripts/bench-service.sh
#
# Needs ab (Debian's apache2-utils) and python3. Loopback only.
set -euo pipefail

BASE=${BASE:-a1f7941}
REQUESTS=${REQUESTS:-20000}
IDLE=${IDLE:-10000}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/bench-service.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

# 10,000 client sockets plus the server's own: raise the descriptor limit.
# A container's hard limit may be lower than 65536 (20000 here): take what
# there is; the clients and the server are separate processes.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if [ -z "${BASE_BIN:-}" ]; then
  base_tree=/tmp/bench-base
  [ -d "$base_tree" ] || git -C "$root" worktree add "$base_tree" "$BASE" >&2
  (cd "$base_tree" && cargo build --release -p todobackend --locked >&2)
  BASE_BIN=$base_tree/target/release/todobackend
fi
if [ -z "${HEAD_BIN:-}" ]; then
  (cd "$root" && cargo build --release -p todobackend --locked >&2)
  HEAD_BIN=$root/target/release/todobackend
fi

# Holds N connections to 127.0.0.1:PORT. slow: each sends a request line and
# then one header line every 5 s, never finishing (the issue's attacker);
# idle: connects and sends nothing. Prints "open N" once all are connected,
# then holds them until killed (at most 120 s).
cat > "$work/hold.py" <<'PY'
import asyncio, sys, time
port, count, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
async def one(opened):
    try:
        r, w = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        opened.append(False); return
    opened.append(True)
    try:
        if mode == "slow":
            w.write(b"GET /todos HTTP/1.1\r\nHost: x\r\n")
            for i in range(24):
                await asyncio.sleep(5)
                w.write(b"X-Slow-%d: y\r\n" % i)
                await w.drain()
        else:
            await asyncio.sleep(120)
    except OSError:
        pass
async def main():
    opened = []
    tasks = []
    for i in range(count):
        tasks.append(asyncio.create_task(one(opened)))
        if i % 500 == 0:
            await asyncio.sleep(0.05)
    deadline = time.time() + 60
    while len(opened) < count and time.time() < deadline:
        await asyncio.sleep(0.1)
    print("open", sum(opened), flush=True)
    await asyncio.wait(tasks, timeout=120)
asyncio.run(main())
PY

port_of() { sed -n 's/.*http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -1; }

alive() { # the listener answers a fresh connection within 5 s
  python3 - "$1" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.settimeout(5)
s.sendall(b"GET /todos HTTP/1.0\r\n\r\n")
print("yes" if s.recv(12).startswith(b"HTTP/1.") else "no")
PY
}

ab_figures() { # requests/s and p99 (ms) from ab's output
  awk '/Requests per second/ {rps=$4} /^  99%/ {p99=$2} /Failed requests/ {failed=$3} END {printf "%s %s %s\n", rps, p99, failed}'
}

measure() { # label binary
  local label=$1 bin=$2 dir=$work/$1
  mkdir -p "$dir"
  "$bin" migrate --db "$dir/db.sqlite3" >/dev/null 2>&1
  "$bin" collectstatic --static-root "$dir/public" >/dev/null 2>&1
  TODOBACKEND_DB=$dir/db.sqlite3 TODOBACKEND_STATIC_ROOT=$dir/public \
    "$bin" serve --listen 127.0.0.1:0 2>"$dir/serve.log" &
  local pid=$!
  for _ in $(seq 100); do [ -n "$(port_of "$dir/serve.log")" ] && break; sleep 0.1; done
  local port; port=$(port_of "$dir/serve.log")
  [ -n "$port" ] || { echo "$label: serve did not start: $(cat "$dir/serve.log")" >&2; exit 1; }
  local url=http://127.0.0.1:$port
  printf '{"title":"bench"}' > "$dir/post.json"
  curl -sf -X POST -H 'Content-Type: application/json' --data @"$dir/post.json" "$url/todos" >/dev/null

  read -r get_rps get_p99 get_failed < <(timeout 120 ab -q -n "$REQUESTS" -c 50 "$url/todos/1" 2>&1 | ab_figures)
  read -r post_rps post_p99 post_failed < <(timeout 120 ab -q -n "$REQUESTS" -c 50 -p "$dir/post.json" -T application/json "$url/todos" 2>&1 | ab_figures)
  local alive1; alive1=$(alive "$port" 2>/dev/null || echo no)

  python3 "$work/hold.py" "$port" "$IDLE" idle > "$dir/idle.out" &
  local holder=$!
  for _ in $(seq 600); do grep -q '^open' "$dir/idle.out" && break; sleep 0.1; done
  local idle_open; idle_open=$(awk '/^open/ {print $2}' "$dir/idle.out")
  sleep 1 # let the server accept what the backlog holds
  local rss_kib; rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  local alive2; alive2=$(alive "$port" 2>/dev/null || echo no)
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true

  python3 "$work/hold.py" "$port" "$IDLE" slow > "$dir/slow.out" &
  holder=$!
  for _ in $(seq 600); do grep -q '^open' "$dir/slow.out" && break; sleep 0.1; done
  read -r _ slow_p99 slow_failed < <(timeout 120 ab -q -s 10 -n 1000 -c 10 "$url/todos/1" 2>&1 | ab_figures)
  local alive3; alive3=$(alive "$port" 2>/dev/null || echo no)
  kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
  local alive4; alive4=$(alive "$port" 2>/dev/null || echo no)

  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  printf '| %s | %s | %s | %s | %s | %s (%s open) | %s | %s/%s/%s/%s |\n' \
    "$label" "$get_rps" "$get_p99" "$post_rps" "$post_p99" "$((rss_kib / 1024)) MiB" "$idle_open" \
    "${slow_p99:-n/a} (${slow_failed:-?} failed)" "$alive1" "$alive2" "$alive3" "$alive4"
}

echo "| commit | GET /todos/1 req/s | GET p99 ms | POST req/s | POST p99 ms | RSS, $IDLE idle | p99 ms with $IDLE slow clients | listener alive (after load/idle/slow/after) |"
echo "|---|---|---|---|---|---|---|---|"
measure "$BASE" "$BASE_BIN"
measure "$(git -C "$root" rev-parse --short HEAD)" "$HEAD_BIN"
