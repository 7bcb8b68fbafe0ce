#!/bin/bash
# Run once by the postgres image, when its data volume is first initialised. The lab's role owns the run
# database and nothing else; the dashboard's role may only log in and read (its SELECT grants come from
# `cardiacfl lab start --db-reader cardiacfl_dashboard`, which runs as the owner). Passwords come from secrets.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v lab_password="$(cat /run/secrets/lab_db_password)" \
  -v dashboard_password="$(cat /run/secrets/dashboard_db_password)" <<'SQL'
CREATE ROLE lab LOGIN PASSWORD :'lab_password';
CREATE DATABASE cardiacfl OWNER lab;
REVOKE ALL ON DATABASE cardiacfl FROM PUBLIC;
CREATE ROLE cardiacfl_dashboard LOGIN PASSWORD :'dashboard_password';
ALTER ROLE cardiacfl_dashboard SET default_transaction_read_only = on;
SQL
