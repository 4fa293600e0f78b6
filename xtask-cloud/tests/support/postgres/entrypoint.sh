#!/bin/sh
# The entrypoint of the tests' PostgreSQL image (Debian's postgresql-15, see
# ../postgres.rs): the official image's variables, so that stack.yml's `db`
# service runs the same on it and on postgres:16-alpine.
#   POSTGRES_PASSWORD_FILE (or POSTGRES_PASSWORD): the superuser's password,
#     one trailing newline removed; needed to initialise an empty PGDATA
#   POSTGRES_USER (postgres), POSTGRES_DB (POSTGRES_USER),
#   PGDATA (/var/lib/postgresql/data)
# An empty PGDATA is initialised (scram-sha-256 over TCP from any address,
# trust on the local socket, as the official image does), then the server
# runs as the postgres user, listening on all addresses.
set -eu

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  # Only what is not the postgres user's yet: a large PGDATA is not walked
  # on every start by chown -R.
  find "$PGDATA" /run/postgresql ! -user postgres -exec chown postgres:postgres {} +
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    [ -r "$POSTGRES_PASSWORD_FILE" ] || {
      echo "error: POSTGRES_PASSWORD_FILE=$POSTGRES_PASSWORD_FILE cannot be read" >&2
      exit 1
    }
  elif [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: an empty PGDATA needs a superuser password: set POSTGRES_PASSWORD_FILE (a Docker secret) or POSTGRES_PASSWORD" >&2
    exit 1
  fi
  # initdb reads the password from a file (its first line: the content less
  # its trailing newline, as the service reads its password file), never argv.
  pwfile=${POSTGRES_PASSWORD_FILE:-}
  if [ -z "$pwfile" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  fi
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  [ -n "${POSTGRES_PASSWORD_FILE:-}" ] || rm -f "$pwfile"
  {
    echo "listen_addresses = '*'"
    # No LLVM in this image (removed to keep it small).
    echo "jit = off"
  } >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != postgres ]; then
    ident=$(printf '%s' "$POSTGRES_DB" | sed 's/"/""/g')
    echo "CREATE DATABASE \"$ident\"" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "initialised $PGDATA: user $POSTGRES_USER, database $POSTGRES_DB" >&2
fi

shift
exec postgres "$@"
