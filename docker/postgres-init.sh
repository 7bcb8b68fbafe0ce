#!/bin/bash
# Run once by the postgres image, when its data volume is first initialised. The lab's role owns the run
# database and nothing else; the dashboard's role may only log in and read (its SELECT grants come from
# `cardiacfl lab start --db-reader cardiacfl_dashboard`, which runs as the owner). Passwords come from secrets.
set -euo pipefail
secrets=${CARDIACFL_SECRETS_DIR:-/run/secrets}
lab_password=$(cat "$secrets/lab_db_password")  # an unreadable secret stops here, not as an empty password
dashboard_password=$(cat "$secrets/dashboard_db_password")
[ -n "$lab_password" ] && [ -n "$dashboard_password" ] || { echo "postgres-init: empty password secret" >&2; exit 1; }
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v lab_role="${CARDIACFL_LAB_ROLE:-lab}" -v database="${CARDIACFL_DATABASE:-cardiacfl}" \
  -v dashboard_role="${CARDIACFL_DASHBOARD_ROLE:-cardiacfl_dashboard}" \
  -v lab_password="$lab_password" -v dashboard_password="$dashboard_password" <<'SQL'
CREATE ROLE :"lab_role" LOGIN PASSWORD :'lab_password';
CREATE DATABASE :"database" OWNER :"lab_role";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
CREATE ROLE :"dashboard_role" LOGIN PASSWORD :'dashboard_password';
ALTER ROLE :"dashboard_role" SET default_transaction_read_only = on;
SQL
