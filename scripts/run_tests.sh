#!/usr/bin/env bash
# The test suite (fast tests by default; pass "-m slow" for the end-to-end ones).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
