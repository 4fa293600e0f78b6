#!/bin/sh
# The entrypoint of the tests' HAProxy image (Debian's haproxy, see
# ../edge.rs): what the official image's does, so that the stacks' `edge`
# service runs the same on it and on haproxy:2.8-alpine.
#   - a first argument that is an option (`-f ...`, `-vv`) is HAProxy's;
#   - `haproxy ...` runs in master-worker mode (-W: SIGUSR2 reloads, the
#     master stays PID 1 and follows its workers) in the foreground (-db);
#   - anything else runs as given.
# It runs as the image's user, haproxy (uid 99): no privileges to drop.
set -e

if [ "${1#-}" != "$1" ]; then
  set -- haproxy "$@"
fi

if [ "$1" = haproxy ]; then
  shift
  set -- haproxy -W -db "$@"
fi

exec "$@"
