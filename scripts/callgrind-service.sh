#!/usr/bin/env bash
# Instructions the server runs per keep-alive GET of one todo, counted by
# callgrind: unlike CPU time, the count does not move with the neighbours'
# load on a shared machine, so it is the repeatable figure beside the
# bench's µs (scripts/bench-service.sh). For each binary given: migrate,
# serve under callgrind with instrumentation off, one todo, a warm-up, then
# instrumentation on for N keep-alive GETs (ab -k, 50 connections) and the
# total divided by N. With ANNOTATE=1 it also prints the top functions
# (inclusive), which is where to look for what to cut.
#
#   scripts/callgrind-service.sh BIN [BIN...]     # N=5000 by default
#   METHOD=POST scripts/callgrind-service.sh BIN  # N keep-alive POST /todos
#                                                 # instead: the write path
#                                                 # (SQLite's insert, commit)
#
# Needs valgrind, ab and curl. Loopback only; bounded in count and time.
set -euo pipefail
N=${N:-5000}
METHOD=${METHOD:-GET}
case "$METHOD" in GET|POST) ;; *) echo "error: METHOD=$METHOD: use GET or POST" >&2; exit 1 ;; esac
work=$(mktemp -d /tmp/callgrind-service.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

port_of() { sed -n 's/.*serving on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -1; }

for bin in "$@"; do
  dir=$work/$(basename "$bin")
  mkdir -p "$dir"
  "$bin" migrate --db "$dir/db.sqlite3" >/dev/null 2>&1
  "$bin" collectstatic --static-root "$dir/public" >/dev/null 2>&1
  TODOBACKEND_DB=$dir/db.sqlite3 TODOBACKEND_STATIC_ROOT=$dir/public \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
    "$bin" serve --listen 127.0.0.1:0 2>"$dir/serve.log" &
  pid=$!
  for _ in $(seq 300); do [ -n "$(port_of "$dir/serve.log")" ] && break; sleep 0.1; done
  port=$(port_of "$dir/serve.log")
  [ -n "$port" ] || { echo "$bin: serve did not start: $(cat "$dir/serve.log")" >&2; exit 1; }
  url=http://127.0.0.1:$port
  curl -sf -X POST -H 'Content-Type: application/json' --data '{"title":"bench"}' "$url/todos" >/dev/null
  if [ "$METHOD" = POST ]; then
    printf '{"title":"bench"}' >"$dir/body.json"
    load=(-p "$dir/body.json" -T application/json "$url/todos")
  else
    load=("$url/todos/1")
  fi
  timeout 120 ab -q -k -n 1000 -c 50 "${load[@]}" >/dev/null 2>&1 || true
  callgrind_control -i on "$pid" >/dev/null
  timeout 300 ab -q -k -n "$N" -c 50 "${load[@]}" > "$dir/ab.out" 2>&1 || true
  failed=$(awk '/Failed requests/ {print $3}' "$dir/ab.out")
  [ -n "$failed" ] || { echo "$bin: ab gave no figures: $(tail -3 "$dir/ab.out")" >&2; }
  callgrind_control -i off "$pid" >/dev/null
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  total=$(callgrind_annotate "$dir/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !found {gsub(",", "", $1); print $1; found = 1}')
  printf '%s: %d instructions per keep-alive %s (%d requests, %s failed)\n' "$bin" "$((total / N))" "$METHOD" "$N" "${failed:-?}"
  if [ -n "${ANNOTATE:-}" ]; then
    callgrind_annotate --inclusive=yes "$dir/callgrind.out" 2>/dev/null | sed -n '1,80p' | cut -c1-220
  fi
done
