#!/usr/bin/env bash
# The main job: a local multi-site study on the embedded defaults.
# Today: environment -> synthetic 3-site cohort -> end-to-end check (and preprocessing cache) of every site.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
COHORT=${COHORT:-data/demo-cohort}
if [ ! -f "$COHORT/site_configs/hospital-c.toml" ]; then
  .venv/bin/cardiacfl synth --out "$COHORT" --sites 3 --seed 0
fi
for config in site_configs/*.toml; do
  .venv/bin/cardiacfl data check --site-config "$config"
done
