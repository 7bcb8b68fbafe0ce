#!/usr/bin/env bash
# A PostgreSQL server for the run-database tests: Debian's postgresql (installed if missing), its cluster
# started, and a test role that may create databases and roles. Prints the URL the tests take:
#   export CARDIACFL_TEST_POSTGRES_URL=$(scripts/test_postgres.sh)
# Needs root or sudo. Safe to re-run, also while another run uses the server.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  $SUDO apt-get install -y postgresql >/dev/null 2>&1 \
    || { $SUDO apt-get update >/dev/null 2>&1 && $SUDO apt-get install -y postgresql >/dev/null 2>&1; } \
    || { echo "test_postgres: could not install Debian's postgresql" >&2; exit 1; }
fi
if [ -z "$(pg_lsclusters -h)" ]; then
  $SUDO pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -1)" main >/dev/null
fi
read -r version cluster port status _ <<<"$(pg_lsclusters -h | head -1)"
[ "$status" = online ] || $SUDO pg_ctlcluster "$version" "$cluster" start >&2
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 1
done
# One password per machine, kept beside this user's other state: runs that overlap (a CI run beside a developer's
# tests) share the role, so a second call must not change the password under the first.
home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
password_file=${XDG_STATE_HOME:-$home/.local/state}/cardiacfl/test-postgres-password
if [ ! -s "$password_file" ]; then
  mkdir -p "$(dirname "$password_file")"
  (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$password_file")
fi
password=$(cat "$password_file")
if [ "$(id -u)" -eq 0 ]; then as_postgres=(runuser -u postgres --); else as_postgres=(sudo -u postgres); fi
PGOPTIONS="-c client_min_messages=warning" "${as_postgres[@]}" psql -q -p "$port" -v ON_ERROR_STOP=1 -v password="$password" >/dev/null <<'SQL'
SELECT 'CREATE ROLE cardiacfl_test' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cardiacfl_test') \gexec
ALTER ROLE cardiacfl_test LOGIN CREATEDB CREATEROLE PASSWORD :'password';
-- dropping a test database ends the sessions other test roles (the dashboard's reader) still hold in it
GRANT pg_signal_backend TO cardiacfl_test;
SQL
echo "postgresql+psycopg://cardiacfl_test:${password}@127.0.0.1:${port}/postgres"
