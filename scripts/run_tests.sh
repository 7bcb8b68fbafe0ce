#!/usr/bin/env bash
# The test suite (fast tests by default; pass "-m slow" for the end-to-end ones).
# The run-database and dashboard tests also run on PostgreSQL: Debian's server is installed and started when
# this user may (root or passwordless sudo); otherwise those cases are skipped and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
if [ -z "${CARDIACFL_TEST_POSTGRES_URL:-}" ] && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
  CARDIACFL_TEST_POSTGRES_URL=$(scripts/test_postgres.sh) && export CARDIACFL_TEST_POSTGRES_URL \
    || echo "run_tests: no PostgreSQL server; its test cases will be skipped" >&2
fi
exec .venv/bin/python -m pytest -q "$@"
