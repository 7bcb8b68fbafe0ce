#!/usr/bin/env bash
# The main job: a local multi-site study on the embedded defaults.
# environment -> synthetic 3-site cohort + the lab's reference panel and public cohort -> check every site ->
# the study (the lab's public pretraining, then federated pretrain -> generator -> fine-tune with DP-SGD +
# SecAgg+, TLS + site authentication) -> summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup_env.sh
SEED=${SEED:-0}  # seeds the sites' cohort, the lab's public cohort and its panel (each role its own namespace)
COHORT=${COHORT:-data/demo-cohort}
PANEL=${PANEL:-data/reference-panel}
PUBLIC=data/public-cohort  # named in studies/demo.toml
if [ ! -f "$COHORT/site_configs/hospital-c.toml" ]; then
  .venv/bin/cardiacfl synth --out "$COHORT" --sites 3 --seed "$SEED" --role sites
fi
if [ ! -f "$PANEL/site_configs/hospital-a.toml" ]; then
  # The coordinating lab's own labelled pairs: its held-out evaluation and the generation gallery (no site data).
  .venv/bin/cardiacfl synth --out "$PANEL" --sites 1 --subjects "${PANEL_SUBJECTS:-1000}" --seed "$SEED" --role panel
fi
if [ ! -f "$PUBLIC/site_configs/hospital-b.toml" ]; then
  # The lab's own non-private pairs it pretrains on before round 1 (two scanners; apart from sites and panel).
  .venv/bin/cardiacfl synth --out "$PUBLIC" --sites 2 --subjects 300 --seed "$SEED" --role public
fi
for config in site_configs/*.toml; do
  .venv/bin/cardiacfl data check --site-config "$config"
done
.venv/bin/cardiacfl study run --study studies/demo.toml --work "${WORK:-runs/demo-study}" \
  --reference-panel "$PANEL/site_configs/hospital-a.toml"
echo
echo "Dashboard for this study (set your own password):"
echo "  CARDIACFL_DASHBOARD_PASSWORD=choose-one .venv/bin/cardiacfl dashboard --db ${WORK:-runs/demo-study}/study.db"
