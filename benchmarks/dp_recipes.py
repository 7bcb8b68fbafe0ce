"""DP recipes side by side at one ε: where the sites' privacy budget pays, on the paper-shaped federation.

Every arm starts from the same public model (the lab's CMR-aligned public pretraining, generator and heads, no
site data) and runs on Flower's Simulation Engine with the study's own ServerApp and ClientApp; every DP arm gives
each site the same lifetime budget ε (a fresh ledger per arm):

- public model alone (no federated round): the baseline every gain is measured from;
- federated, no DP: the ceiling of the same rounds;
- full encoder: DP-SGD at each site on the heads and the whole ECG encoder;
- last block: DP-SGD on the heads and the encoder's last block only (parameter-efficient: fewer noisy coordinates;
  the demo's fine-tuning);
- heads only: DP-SGD on the linear heads;
- last block, fewer larger steps: 4x the batch at the same epochs (a quarter of the steps, each less noisy);
- DP pretraining + last block: a DP pretrain round on the hospitals' pairs against the public bank first (each
  site's plan spreads its budget over both phases), then the last-block fine-tuning;
- distributed DP, heads only: one noisy step per round, each site adding σ/√t under SecAgg+
  (client/distributed_dp.py), σ chosen so the site with the highest sample rate ends at ε, FedAdam on the sum;
- each hospital alone (centrally on its own training split, no DP): the median of them.

Scored on the pooled test split (every site's, held out from every arm): mean AUROC with a 95 % bootstrap CI, mean
indicator R², retrieval top-1 on the hospitals' test pairs. Writes `recipes.json` and `recipes.png` into --out.

    .venv/bin/cardiacfl synth --layout paper --scale 0.25 --seed 0 --role sites --out data/paper-0.25-seed0
    .venv/bin/python benchmarks/dp_recipes.py --data data/paper-0.25-seed0 --out runs/dp-recipes-seed0 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from privacy_utility import (Budget, arm_site_config, log, mean_auroc_with_ci, number, pretrain_on_public_data,  # noqa: E402
                                        public_cohort, train_centrally)
from client.privacy_ledger import PlannedPhase, noise_for_plan  # noqa: E402
from protocol.jsonable import finite_or_null  # noqa: E402
from protocol.site_metrics import MetricKey as K  # noqa: E402
from server.public_data import public_sites, train_on_public_data  # noqa: E402
from server.study_config import load_study_config  # noqa: E402
from shared_models.cardiacnets import CardiacNets  # noqa: E402
from shared_models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from shared_models.evaluation import evaluate  # noqa: E402
from sitedata.pooling import find_site_configs, pooled  # noqa: E402
from sitedata.site_config import load_site_config  # noqa: E402
from sitedata.site_data import prepare_site  # noqa: E402

BUDGET = Budget("cpu", finetune_epochs=6, rounds=3, public_pretrain_epochs=60, public_generator_epochs=10,
                public_subjects=300, epsilons=(8.0,), bootstrap=500)
DISTRIBUTED_ROUNDS = 30
DP_BATCH = 32


@dataclass
class Recipe:
    name: str
    dp: bool = True
    finetune_mode: str = "full"
    batch_size: int = 32
    pretrain_rounds: int = 0
    distributed: bool = False
    notes: dict = field(default_factory=dict)


RECIPES = (
    Recipe("federated, no DP", dp=False),
    Recipe("full encoder"),
    Recipe("last block", finetune_mode="last-block"),
    Recipe("heads only", finetune_mode="linear"),
    Recipe("last block, fewer larger steps", finetune_mode="last-block", batch_size=128),
    Recipe("DP pretraining + last block", finetune_mode="last-block", pretrain_rounds=1),
    Recipe("distributed DP, heads only", finetune_mode="linear", distributed=True),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a paper-layout cohort (cardiacfl synth --layout paper)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0, help="the public cohort's seed and every arm's")
    parser.add_argument("--only", nargs="*", default=None, help="recipe names to run (default: all)")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args.data, args.out.resolve(), args.epsilon, args.seed, args.only)
    print_table(rows)
    log(f"done in {time.perf_counter() - started:.0f} s: {args.out / 'recipes.json'}, {args.out / 'recipes.png'}")


def run(data: Path, out: Path, epsilon: float, seed: int, only: list[str] | None) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    configs = find_site_configs(data)
    sites = [prepare_site(load_site_config(path)) for path in configs]
    hospitals = [s for s in sites if s.config.site_id.startswith("hospital-")]
    public = public_cohort(out, BUDGET, "cmr-aligned")
    init = public_model(out, public)
    test = pooled(sites, "test")
    hospital_test = pooled(hospitals, "test")
    rows = [score(load_checkpoint(init)[0], "public model alone", None, test, hospital_test, 0.0)]
    for hospital in hospitals:
        arm_started = time.perf_counter()
        model = train_centrally([hospital], init, BUDGET)
        rows.append(score(model, f"alone: {hospital.config.site_id}", None, test, hospital_test,
                          time.perf_counter() - arm_started))
    for recipe in RECIPES:
        if only and recipe.name not in only:
            continue
        arm_started = time.perf_counter()
        model = train_recipe(out, configs, init, public, recipe, epsilon, seed)
        rows.append(score(model, recipe.name, epsilon if recipe.dp else None, test, hospital_test,
                          time.perf_counter() - arm_started) | recipe.notes)
        (out / "recipes.json").write_text(json.dumps(finite_or_null(rows), indent=1))
    plot(rows, out / "recipes.png", epsilon)
    return rows


def public_model(out: Path, public) -> Path:
    """The lab's public pretraining and generator (privacy_utility's cache), then its heads on the public labels."""
    pretrained = pretrain_on_public_data(out, public, BUDGET, "cmr-aligned")
    path = out / "public-model.pt"
    if not path.is_file():
        model, _ = load_checkpoint(pretrained)
        public_with_heads = type(public)(**{**public.__dict__, "finetune_epochs": 30})
        train_on_public_data(model, public_with_heads, public_sites(public), "finetune", out / "public-cache-cmr-aligned", seed=0)
        save_checkpoint(path, model, phase="public-finetune", step=0)
    return path


def train_recipe(out: Path, configs: list[Path], init: Path, public, recipe: Recipe, epsilon: float, seed: int) -> CardiacNets:
    from cardiacfl.simulation import simulate_study

    slug = recipe.name.replace(",", "").replace(" ", "-").replace("+", "and")
    arm = out / "arms" / slug
    shutil.rmtree(arm, ignore_errors=True)
    arm_configs = [arm_site_config(path, arm / "sites", epsilon if recipe.dp else None) for path in configs]
    for path in arm_configs:  # the recipe's batch size at every site
        path.write_text(path.read_text().replace("batch_size = 32", f"batch_size = {recipe.batch_size}"))
    shutil.copy(init, arm / "public-model.pt")
    study = [f'[study]\nname = "{slug}"\npreset = "{BUDGET.preset}"\ndp = {str(recipe.dp).lower()}\nseed = {seed}\n'
             f'initial_checkpoint = "public-model.pt"\n']
    if recipe.distributed:
        sigma = distributed_sigma(arm_configs, epsilon)
        recipe.notes = {"noise_multiplier": sigma, "rounds": DISTRIBUTED_ROUNDS}
        study.append(f'dp_mode = "distributed"\nnoise_multiplier = {sigma}\ndp_batch = {DP_BATCH}\n'
                     f'\n[secagg]\nenabled = true\nreconstruction_threshold = 1.0\n')
        # the sites' plain SGD step is the noisy mean gradient (lr 1); FedAdam's step on the aggregate sets the size
        study.append(f'\n[[phase]]\nname = "finetune"\nrounds = {DISTRIBUTED_ROUNDS}\nlocal_epochs = 1\nlr = 1.0\n'
                     f'strategy = "fedadam"\nserver_lr = 1e-2\nfinetune_mode = "{recipe.finetune_mode}"\n')
    else:
        study.append("\n[secagg]\nenabled = false  # masking changes who sees an update, not its value\n")
        if recipe.pretrain_rounds:
            study.append(f'\n[public_data]\nsites = [{", ".join(json.dumps(str(p)) for p in public.sites)}]\n'
                         f'pretrain_epochs = 0\n'
                         f'\n[[phase]]\nname = "pretrain"\nrounds = {recipe.pretrain_rounds}\nlocal_epochs = 1\nlr = 3e-4\n')
        study.append(f'\n[[phase]]\nname = "finetune"\nrounds = {BUDGET.rounds}\nlocal_epochs = {BUDGET.finetune_epochs // BUDGET.rounds}\n'
                     f'lr = {BUDGET.lr}\nfinetune_mode = "{recipe.finetune_mode}"\n')
    (arm / "study.toml").write_text("".join(study))
    log(f"{recipe.name}: simulating {len(configs)} sites")
    paths = simulate_study(load_study_config(arm / "study.toml"), arm / "run", site_configs=arm_configs, status=lambda line: None)
    return load_checkpoint(next(paths.checkpoints.glob("study-*/finetune.pt")))[0]


def distributed_sigma(site_configs: list[Path], epsilon: float) -> float:
    """σ for which the site with the highest sample rate ends its DISTRIBUTED_ROUNDS steps at ε."""
    from client.site_round import _steps_per_epoch, phase_dataset

    rates = [_steps_per_epoch(len(phase_dataset(prepare_site(load_site_config(p)), "finetune")), DP_BATCH)[0]
             for p in site_configs]
    config = load_site_config(site_configs[0])
    return round(noise_for_plan([PlannedPhase("finetune", max(rates), DISTRIBUTED_ROUNDS)], epsilon,
                                config.privacy.target_delta), 3)


def score(model: CardiacNets, name: str, epsilon: float | None, test, hospital_test, seconds: float) -> dict:
    loader = DataLoader(test, batch_size=64)
    auroc, ci = mean_auroc_with_ci(model, loader, BUDGET.bootstrap)
    finetune = evaluate(model, loader, "finetune", bootstrap=BUDGET.bootstrap)
    aligned = evaluate(model, DataLoader(hospital_test, batch_size=64), "pretrain", bootstrap=BUDGET.bootstrap)
    row = {"recipe": name, "epsilon": epsilon, "auroc_mean": auroc, "auroc_ci": ci, "r2_mean": finetune.get(K.MEAN_R2),
           "r2_ci": [finetune.get(f"{K.MEAN_R2}_low"), finetune.get(f"{K.MEAN_R2}_high")],
           "hospital_retrieval_top1": aligned.get(K.RETRIEVAL_TOP1), "hospital_retrieval_chance": aligned.get(K.RETRIEVAL_CHANCE),
           "seconds": round(seconds, 1)}
    log(f"{name:<24} AUROC {auroc:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]  R² {row['r2_mean']:.3f}  "
        f"retrieval {row['hospital_retrieval_top1']:.3f} (chance {row['hospital_retrieval_chance']:.3f})  ({seconds:.0f} s)")
    return row


def plot(rows: list[dict], path: Path, epsilon: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alone = [r["auroc_mean"] for r in rows if r["recipe"].startswith("alone:")]
    shown = [r for r in rows if not r["recipe"].startswith("alone:")]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shown) + 1.5))
    for y, row in enumerate(shown):
        low, high = row["auroc_ci"]
        colour = "tab:grey" if row["epsilon"] is None else "tab:blue"
        ax.errorbar(row["auroc_mean"], y, xerr=[[row["auroc_mean"] - low], [high - row["auroc_mean"]]], fmt="o",
                    color=colour, capsize=3)
    ax.set_yticks(range(len(shown)), [r["recipe"] for r in shown])
    ax.invert_yaxis()
    if alone:
        ax.axvline(float(np.median(alone)), color="tab:red", linestyle=":", label="median hospital alone")
    ax.axvline(0.5, color="grey", linewidth=0.8, label="chance")
    ax.set_xlabel(f"mean AUROC, pooled test split (95 % CI); DP arms at ε = {epsilon:g} per site")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(rows: list[dict]) -> None:
    print("| recipe | ε | mean AUROC [95 % CI] | mean R² [95 % CI] | retrieval top-1, hospitals (chance) | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['recipe']} | {number(r['epsilon'], 0)} | {number(r['auroc_mean'])} [{number(r['auroc_ci'][0])}, "
              f"{number(r['auroc_ci'][1])}] | {number(r['r2_mean'])} [{number(r['r2_ci'][0])}, {number(r['r2_ci'][1])}] | "
              f"{number(r['hospital_retrieval_top1'])} ({number(r['hospital_retrieval_chance'])}) | {r['seconds']:.0f} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
