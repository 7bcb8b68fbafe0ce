"""Privacy against utility on the paper-shaped federation: what federation, DP and joining cost or gain.

Arms, each with three encoders that see the same ECGs and the same budget, so that alignment is the only
difference between the last two:
- scratch: no pretraining, fine-tuned on the labels;
- masked-ecg: the lab's public pretraining with masked ECG (and masked CMR) modelling only, no alignment term;
- cmr-aligned: the same public pretraining, epochs and ECGs, plus ECG-CMR InfoNCE alignment (and the generator,
  which trains only the generator);
each pretrained checkpoint the same for every arm, and the same fine-tuning budget (epochs over each arm's own
training data) in every arm:
- centralized: every site's training split pooled, no DP;
- federated: every site, on Flower's Simulation Engine with the study's ServerApp and ClientApp, no DP;
- federated-dp: the same at ε = 1, 3 and 8, each site's lifetime budget, with a fresh ledger per arm;
- local:<hospital>: each small hospital alone on its own training split.

Scored on each small hospital's test split and on the pooled test split (held out from every arm): mean AUROC with
a 95 % bootstrap CI, mean indicator R², for the pretrained encoders retrieval top-1 (with chance), for the
cmr-aligned one the generator's SSIM and EF-proxy error beside the mean training clip's. What alignment adds,
cmr-aligned minus masked-ecg mean AUROC per arm with a paired bootstrap 95 % CI (the same resampled test subjects
for both), is printed and written to `alignment.json`.

    .venv/bin/cardiacfl synth --layout paper --scale 0.1 --out data/paper-0.1
    .venv/bin/python benchmarks/privacy_utility.py --data data/paper-0.1 --out runs/privacy-utility-quick --quick

Writes `utility.json` (a list of rows, schema in `ROW_KEYS`), `alignment.json` and `utility.png` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.public_data import public_sites, train_on_public_data  # noqa: E402
from server.study_config import PublicData, load_study_config  # noqa: E402
from shared_models import metrics  # noqa: E402
from shared_models.cardiacnets import CardiacNets, build_model  # noqa: E402
from shared_models.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from shared_models.evaluation import evaluate  # noqa: E402
from protocol.jsonable import finite_or_null  # noqa: E402
from protocol.site_metrics import MetricKey as K  # noqa: E402
from shared_models.targets import DISEASES  # noqa: E402
from shared_models.training import TrainOptions, reference_pos_weight, train_phase  # noqa: E402
from sitedata.pooling import find_site_configs, labelled_fraction, pooled  # noqa: E402
from sitedata.site_config import load_site_config  # noqa: E402
from sitedata.site_data import PreparedSite, prepare_site  # noqa: E402

ROW_KEYS = ("setting", "epsilon", "encoder", "eval", "auroc_mean", "auroc_ci", "r2_mean", K.RETRIEVAL_TOP1,
            K.RETRIEVAL_CHANCE, "ssim", "ssim_mean_clip", "ef_mae", "ef_mae_mean_clip", "seconds")
ENCODERS = ("scratch", "masked-ecg", "cmr-aligned")
ALIGNMENT_WEIGHT = {"masked-ecg": 0.0, "cmr-aligned": 1.0}  # the public pretraining's InfoNCE weight


@dataclass
class Budget:
    preset: str
    finetune_epochs: int  # over each arm's training data; federated: rounds x local epochs
    rounds: int
    public_pretrain_epochs: int
    public_generator_epochs: int
    public_subjects: int
    epsilons: tuple[float, ...]
    bootstrap: int
    lr: float = 1e-3


# Quick: enough public pretraining that the tiny model's embeddings do not collapse (10 epochs over 112 pairs left
# every ECG and CMR embedding alike, pairwise cosine 0.999, and retrieval exactly at chance).
QUICK = Budget("tiny", finetune_epochs=4, rounds=2, public_pretrain_epochs=30, public_generator_epochs=6,
               public_subjects=150, epsilons=(1.0, 3.0, 8.0), bootstrap=100)
FULL = Budget("cpu", finetune_epochs=9, rounds=3, public_pretrain_epochs=60, public_generator_epochs=30,
              public_subjects=300, epsilons=(1.0, 3.0, 8.0), bootstrap=500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a paper-layout cohort (cardiacfl synth --layout paper)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny preset, fewer epochs: minutes, not an hour")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = run(args.data, args.out, QUICK if args.quick else FULL)
    print_table(rows)
    log(f"done in {time.perf_counter() - started:.0f} s: {args.out / 'utility.json'}, {args.out / 'utility.png'}")


def run(data: Path, out: Path, budget: Budget) -> list[dict]:
    """Every arm with every encoder; writes utility.json (after each encoder), alignment.json and utility.png;
    returns the rows."""
    out = out.resolve()  # the arms' site configs name their data root by this path, from another folder
    out.mkdir(parents=True, exist_ok=True)
    configs = find_site_configs(data)
    sites = [prepare_site(load_site_config(path)) for path in configs]
    hospitals = [site for site in sites if site.config.site_id.startswith("hospital-")]
    if not hospitals:
        raise SystemExit(f"{data}: no hospital-* sites; write a paper layout with cardiacfl synth --layout paper")
    log(f"{len(sites)} sites ({', '.join(s.config.site_id for s in sites)}); budget {budget}")

    publics = {encoder: public_cohort(out, budget, encoder) for encoder in ALIGNMENT_WEIGHT}
    pretrained = {encoder: pretrain_on_public_data(out, public, budget, encoder) for encoder, public in publics.items()}
    evaluation = Evaluation(sites, hospitals, budget, prior_clip=public_prior_clip(pretrained["cmr-aligned"]))
    rows: list[dict] = []
    for encoder in ENCODERS:
        init = pretrained.get(encoder)
        for setting, arm_sites in [("centralized", sites), *((f"local:{h.config.site_id}", [h]) for h in hospitals)]:
            arm_started = time.perf_counter()
            model = train_centrally(arm_sites, init, budget)
            rows += evaluation.rows(model, setting, None, encoder, time.perf_counter() - arm_started)
        for epsilon in (None, *budget.epsilons):
            arm_started = time.perf_counter()
            model = train_federated(out, configs, init, budget, epsilon, encoder, publics.get(encoder))
            rows += evaluation.rows(model, "federated-dp" if epsilon else "federated", epsilon, encoder,
                                    time.perf_counter() - arm_started)
        (out / "utility.json").write_text(json.dumps(finite_or_null(rows), indent=1))
    effects = evaluation.alignment_effects()
    (out / "alignment.json").write_text(json.dumps(finite_or_null(effects), indent=1))
    plot(rows, out / "utility.png")
    return rows


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


# The lab's public data and the pretraining every cmr-aligned arm starts from ---------------------------------

def public_cohort(out: Path, budget: Budget, encoder: str) -> PublicData:
    """The lab's own ECG-CMR pairs (the `public` role's cohort, apart from the federation's), written once; the
    same data for both pretrained encoders, pretrained with or without the alignment term."""
    from synthetic.cohort import generate_cohort

    folder = out / "public-cohort"
    if not (folder / "site_configs").is_dir():
        generate_cohort(folder, n_sites=2, subjects=budget.public_subjects, seed=0, role="public")
    return PublicData(sites=tuple(sorted((folder / "site_configs").glob("*.toml"))),
                      description="the lab's public ECG-CMR cohort (synthetic)",
                      pretrain_epochs=budget.public_pretrain_epochs,
                      generator_epochs=budget.public_generator_epochs if encoder == "cmr-aligned" else 0,
                      alignment_weight=ALIGNMENT_WEIGHT[encoder])


def pretrain_on_public_data(out: Path, public: PublicData, budget: Budget, encoder: str) -> Path:
    """Public pretraining (and for cmr-aligned the generator), exactly as a study's ServerApp runs them (so its
    cache serves every federated arm too): seed 0, the preset's initial weights."""
    cache = out / f"public-cache-{encoder}"
    cache.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model = build_model(budget.preset)
    data = public_sites(public)
    for phase in ("pretrain", "generator"):
        done = train_on_public_data(model, public, data, phase, cache, seed=0)
        if done is not None:
            log(f"{encoder}: public {phase}: {done.epochs} epochs over {done.examples} samples in {done.seconds:.0f} s"
                f"{' (cached)' if done.cached else ''}")
    path = cache / "pretrained.pt"
    save_checkpoint(path, model, phase="public-generator", step=0)
    return path


def public_prior_clip(pretrained: Path) -> np.ndarray:
    model, _ = load_checkpoint(pretrained)
    return (model.generator.prior_clip.numpy() + 1) / 2


# Training arms ----------------------------------------------------------------------------------------------

def train_centrally(sites: list[PreparedSite], init: Path | None, budget: Budget) -> CardiacNets:
    """Fine-tune on the pooled training splits of `sites` with the sites' own loop and class weighting."""
    torch.manual_seed(0)
    model = load_checkpoint(init)[0] if init else build_model(budget.preset)
    data = labelled_fraction(pooled(sites, "train"), 1.0)
    loader = DataLoader(data, batch_size=32, shuffle=True, drop_last=len(data) > 32,
                        generator=torch.Generator().manual_seed(0))
    options = TrainOptions(phase="finetune", epochs=budget.finetune_epochs, lr=budget.lr, seed=0)
    train_phase(model, loader, options, pos_weight=reference_pos_weight())
    return model


def train_federated(out: Path, configs: list[Path], init: Path | None, budget: Budget, epsilon: float | None,
                    encoder: str, public: PublicData | None) -> CardiacNets:
    """One study on Flower's Simulation Engine; every site a copy of its config with its own fresh ledger."""
    from cardiacfl.simulation import simulate_study

    name = f"federated-{encoder}-{'nodp' if epsilon is None else f'eps{epsilon:g}'}"
    arm = out / "arms" / name
    shutil.rmtree(arm, ignore_errors=True)
    arm_configs = [arm_site_config(path, arm / "sites", epsilon) for path in configs]
    study_text = f"""[study]
name = "{name}"
preset = "{budget.preset}"
dp = {str(epsilon is not None).lower()}

[secagg]
enabled = false  # masking changes who sees an update, not its value (up to quantisation)

[[phase]]
name = "finetune"
rounds = {budget.rounds}
local_epochs = {budget.finetune_epochs // budget.rounds}
lr = {budget.lr}
"""
    if init is not None:  # the same public pretraining as the encoder's other arms: the cache below serves it
        study_text += f"""
[public_data]
sites = [{", ".join(f'"{p}"' for p in public.sites)}]
pretrain_epochs = {public.pretrain_epochs}
generator_epochs = {public.generator_epochs}
alignment_weight = {public.alignment_weight}
"""
        (arm / "run" / "checkpoints").mkdir(parents=True, exist_ok=True)
        for cached in (out / f"public-cache-{encoder}").glob("public-*.pt"):
            shutil.copy(cached, arm / "run" / "checkpoints" / cached.name)
    (arm / "study.toml").write_text(study_text)
    log(f"{name}: simulating {len(configs)} sites")
    paths = simulate_study(load_study_config(arm / "study.toml"), arm / "run", site_configs=arm_configs,
                           status=lambda line: None)
    return load_checkpoint(next(paths.checkpoints.glob("study-*/finetune.pt")))[0]


def arm_site_config(path: Path, root: Path, epsilon: float | None) -> Path:
    """A copy of a site: its data linked, its preprocessing cache shared, but its own ledgers, its budget set to
    `epsilon` (None: no DP required)."""
    config = load_site_config(path)
    site_dir = root / config.site_id
    site_dir.mkdir(parents=True)
    own_state = {own.resolve() for own in (config.state_dir, config.ledger_copy_path.parent, config.cache_dir)}
    for entry in config.data_root.iterdir():
        if entry.resolve() not in own_state:
            (site_dir / entry.name).symlink_to(entry)
    raw = tomllib.loads(path.read_text())
    raw["site"].update(data_root=str(site_dir), manifest=str(config.manifest), cache_dir=str(config.cache_dir))
    privacy = raw.setdefault("privacy", {})
    privacy.update(required=epsilon is not None)
    if epsilon is not None:
        privacy.update(target_epsilon=float(epsilon))
    target = root / f"{config.site_id}.toml"
    target.write_text(_toml(raw))
    return target


def _toml(tables: dict) -> str:
    """The flat two-level TOML that site configs use (tables of strings, numbers, booleans and string lists)."""
    def value(v):
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))
    return "\n".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                     for name, table in tables.items())


# Scoring ----------------------------------------------------------------------------------------------------

class Evaluation:
    def __init__(self, sites: list[PreparedSite], hospitals: list[PreparedSite], budget: Budget, prior_clip):
        self.splits = {"pooled": pooled(sites, "test"), **{h.config.site_id: pooled([h], "test") for h in hospitals}}
        self.budget, self.prior_clip = budget, prior_clip
        self.pooled_scores: dict[tuple, tuple] = {}  # (setting, epsilon, encoder) -> the pooled test split's scores

    def rows(self, model: CardiacNets, setting: str, epsilon: float | None, encoder: str, seconds: float) -> list[dict]:
        out = []
        for name, test in self.splits.items():
            loader = DataLoader(test, batch_size=64)
            finetune = evaluate(model, loader, "finetune")
            scores = disease_scores(model, loader)
            auroc, ci = mean_auroc_with_ci(model, loader, self.budget.bootstrap, scores=scores)
            if name == "pooled":
                self.pooled_scores[setting, epsilon, encoder] = scores
            row = {key: None for key in ROW_KEYS} | {
                "setting": setting, "epsilon": epsilon, "encoder": encoder, "eval": name, "auroc_mean": auroc,
                "auroc_ci": ci, "r2_mean": finetune.get(K.MEAN_R2), "seconds": round(seconds, 1)}
            if encoder in ALIGNMENT_WEIGHT:  # the scratch encoder's CMR side was never trained
                aligned = evaluate(model, loader, "pretrain")
                row |= {K.RETRIEVAL_TOP1: aligned.get(K.RETRIEVAL_TOP1), K.RETRIEVAL_CHANCE: aligned.get(K.RETRIEVAL_CHANCE)}
            if encoder == "cmr-aligned":  # only it has a trained generator
                generated = evaluate(model, loader, "generator", generate_samples=24, reference_clip=self.prior_clip)
                row |= {"ssim": generated.get(K.SSIM), "ssim_mean_clip": generated.get(K.BASELINE_SSIM),
                        "ef_mae": generated.get(K.EF_PROXY_MAE), "ef_mae_mean_clip": generated.get(K.BASELINE_EF_PROXY_MAE)}
            out.append(row)
        pooled_row = out[0]
        log(f"{setting:<22} ε={epsilon!s:<5} {encoder:<11} pooled AUROC {pooled_row['auroc_mean']:.3f} "
            f"[{pooled_row['auroc_ci'][0]:.3f}, {pooled_row['auroc_ci'][1]:.3f}] R² {pooled_row['r2_mean']:.3f} "
            f"({seconds:.0f} s)")
        return out


    def alignment_effects(self, seed: int = 0) -> list[dict]:
        """cmr-aligned minus masked-ecg mean AUROC on the pooled test split, per arm, with a paired bootstrap
        95 % CI (both models scored on the same resampled subjects)."""
        effects = []
        for (setting, epsilon, encoder), aligned in self.pooled_scores.items():
            masked = self.pooled_scores.get((setting, epsilon, "masked-ecg"))
            if encoder != "cmr-aligned" or masked is None:
                continue
            n = len(aligned[0])
            ci = list(metrics.bootstrap_interval(lambda i: mean_auroc(aligned, i) - mean_auroc(masked, i), n,
                                                 n=self.budget.bootstrap, seed=seed))
            with_alignment, without = mean_auroc(aligned, np.arange(n)), mean_auroc(masked, np.arange(n))
            effects.append({"setting": setting, "epsilon": epsilon, "auroc_cmr_aligned": with_alignment,
                            "auroc_masked_ecg": without, "difference": with_alignment - without, "ci": ci})
            log(f"alignment effect, {setting} ε={epsilon}: {effects[-1]['difference']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]")
        return effects


@torch.no_grad()
def disease_scores(model: CardiacNets, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probabilities, labels, label masks), each (subjects, diseases), over a loader."""
    model.eval()
    probs, labels, masks = [], [], []
    for batch in loader:
        probs.append(model.heads(batch)[1].sigmoid().numpy())
        labels.append(batch["diseases"].numpy())
        masks.append(batch["disease_mask"].numpy().astype(bool))
    if not probs:  # an empty test split (a toy hospital)
        return np.zeros((0, len(DISEASES))), np.zeros((0, len(DISEASES))), np.zeros((0, len(DISEASES)), bool)
    return tuple(np.concatenate(x) for x in (probs, labels, masks))


def mean_auroc(scores: tuple, index: np.ndarray) -> float:
    """Mean over the diseases of the AUROC on the subjects `index` (NaN where no disease has both classes)."""
    probs, labels, masks = scores
    return metrics.mean_over_targets(metrics.auroc, labels[index], probs[index], masks[index])


def mean_auroc_with_ci(model: CardiacNets, loader: DataLoader, n: int, seed: int = 0,
                       scores: tuple | None = None) -> tuple[float, list[float]]:
    """Mean AUROC over the diseases, and its percentile bootstrap 95 % CI over resampled subjects."""
    scores = scores or disease_scores(model, loader)
    count = len(scores[0])
    ci = list(metrics.bootstrap_interval(lambda i: mean_auroc(scores, i), count, n=n, seed=seed))
    return mean_auroc(scores, np.arange(count)), ci


# Reporting --------------------------------------------------------------------------------------------------

def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled_rows = [r for r in rows if r["eval"] == "pooled"]
    fig, axes = plt.subplots(2, len(ENCODERS), figsize=(5 * len(ENCODERS), 6.5), sharex=True, sharey="row")
    for column, encoder in enumerate(ENCODERS):
        mine = [r for r in pooled_rows if r["encoder"] == encoder]
        for row_index, (key, label) in enumerate((("auroc_mean", "mean AUROC (pooled test)"),
                                                  ("r2_mean", "mean indicator R² (pooled test)"))):
            ax = axes[row_index, column]
            dp = sorted((r["epsilon"], r[key]) for r in mine if r["setting"] == "federated-dp")
            if dp:
                ax.plot([e for e, _ in dp], [v for _, v in dp], "o-", color="tab:blue", label="federated, DP")
            references = (("centralized", "tab:green", "-"), ("federated", "tab:blue", "--"))
            for setting, colour, style in references:
                value = next((r[key] for r in mine if r["setting"] == setting), None)
                if value is not None:
                    ax.axhline(value, color=colour, linestyle=style, label=f"{setting} (no DP)")
            local = [r[key] for r in mine if r["setting"].startswith("local:") and r[key] is not None]
            if local:
                ax.axhline(float(np.median(local)), color="tab:red", linestyle=":", label="median hospital alone")
            if key == "auroc_mean":
                ax.axhline(0.5, color="grey", linewidth=0.8, label="chance")
                ax.set_title(f"{encoder} encoder")
            ax.set_xscale("log")
            ax.set_xticks([1, 3, 8], ["1", "3", "8"])
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set(ylabel=label if column == 0 else None, xlabel="ε per site (lifetime)" if row_index == 1 else None)
            ax.grid(alpha=0.3)
        axes[0, column].legend(fontsize=7, loc="lower right")
    fig.suptitle("Utility against privacy on the paper-shaped federation (held-out test splits)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def number(value, digits=3) -> str:
    """A table cell: the value to `digits` places, '-' where there is none."""
    return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def print_table(rows: list[dict]) -> None:
    print("| setting | ε | encoder | mean AUROC, pooled [95 % CI] | R², pooled | hospitals' mean AUROC | "
          "retrieval top-1 (chance) | SSIM (mean clip) | EF-proxy MAE (mean clip) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in (r for r in rows if r["eval"] == "pooled"):
        hospitals = [r["auroc_mean"] for r in rows if r["eval"] != "pooled" and r["setting"] == row["setting"]
                     and r["epsilon"] == row["epsilon"] and r["encoder"] == row["encoder"]]
        ci = row["auroc_ci"]
        print(f"| {row['setting']} | {number(row['epsilon'], 0)} | {row['encoder']} | {number(row['auroc_mean'])} "
              f"[{number(ci[0])}, {number(ci[1])}] | {number(row['r2_mean'])} | {number(float(np.nanmean(hospitals)))} | "
              f"{number(row[K.RETRIEVAL_TOP1])} ({number(row[K.RETRIEVAL_CHANCE])}) | {number(row['ssim'])} "
              f"({number(row['ssim_mean_clip'])}) | {number(row['ef_mae'], 2)} ({number(row['ef_mae_mean_clip'], 2)}) |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
