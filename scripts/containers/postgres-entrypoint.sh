#!/bin/bash
# The stand-in postgres image's entrypoint: on an empty data folder, initdb with the superuser password from
# POSTGRES_PASSWORD_FILE, run /docker-entrypoint-initdb.d/*.sh against a socket-only server, then serve on
# every address with password (SCRAM) authentication.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -r "${POSTGRES_PASSWORD_FILE:-}" ] || { echo "postgres: POSTGRES_PASSWORD_FILE is not a readable file" >&2; exit 1; }
  initdb --username="${POSTGRES_USER:-postgres}" --pwfile="$POSTGRES_PASSWORD_FILE" --encoding=UTF8 --locale=C.UTF-8 --auth-local=trust \
    --auth-host=scram-sha-256 -D "$PGDATA" >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /var/run/postgresql" -w start >/dev/null
  for script in /docker-entrypoint-initdb.d/*.sh; do
    [ -e "$script" ] && bash "$script"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
[ "$1" = "postgres" ] && shift && exec postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql "$@"
exec "$@"
