#!/usr/bin/env bash
# Install (Debian) and start a throw-away PostgreSQL server on 127.0.0.1:5432 for the
# multi-worker tests; prints the URL to use in DSE_TEST_POSTGRES_URL.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data=${DSE_PG_DATA:-/tmp/dse-pg-data}
if [ ! -s "$data/PG_VERSION" ]; then
  rm -rf "$data"; mkdir -p "$data"; chown postgres:postgres "$data"
  su postgres -c "$bin/initdb -D $data -A trust -U postgres" >/dev/null
fi
if ! su postgres -c "$bin/pg_ctl -D $data status" >/dev/null 2>&1; then
  # a server killed with its session leaves its pid and socket lock files behind
  rm -f "$data/postmaster.pid" /tmp/.s.PGSQL.5432 /tmp/.s.PGSQL.5432.lock
  su postgres -c "$bin/pg_ctl -D $data -l $data/server.log -o '-c listen_addresses=127.0.0.1 -p 5432 -k /tmp' -w start" >/dev/null
fi
for _ in $(seq 30); do "$bin/pg_isready" -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='dse'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE dse" >/dev/null
echo "postgresql+psycopg://postgres@127.0.0.1:5432/dse"
