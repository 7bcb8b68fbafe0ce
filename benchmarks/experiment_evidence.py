"""Evidence for the model design, centralized on the pooled synthetic cohort (`small` preset by default):

1. ECG-only supervised baseline vs CMR-aligned pretrained encoder (+ masked-ECG-only pretraining as an
   ablation), each fine-tuned at 10 % and 100 % of the labels: per-disease AUROC and indicator R² on test.
2. Generator SSIM/PSNR on held-out pairs vs the trivial baseline (the mean training clip).

    .venv/bin/python benchmarks/experiment_evidence.py [--data data/demo-cohort] [--out runs/evidence]

Label-scarce runs are repeated over `--seeds` label subsets (mean and spread printed). Writes
`evidence.json` and `evidence.png` into `--out`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cardiacfl.central import train_central
from sitedata.pooling import load_sites
from protocol.jsonable import finite_or_null
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import per_target
from shared_models.targets import DISEASES, INDICATORS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/demo-cohort"))
    parser.add_argument("--out", type=Path, default=Path("runs/evidence"))
    parser.add_argument("--preset", default="small")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--generator-epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--finetune-mode", default="full", choices=["full", "linear"])
    parser.add_argument("--reuse-pretrained", action="store_true", help="keep pretrain checkpoints already in --out")
    parser.add_argument("--skip-generator", action="store_true")
    args = parser.parse_args()

    sites = load_sites(args.data)
    common = dict(preset=args.preset, sites=sites, bootstrap=0, generate_samples=0)
    start = time.perf_counter()
    encoders: dict[str, Path | None] = {"ecg-only": None}
    for name, alignment_weight in (("masked-ecg", 0.0), ("cmr-aligned", 1.0)):
        out = args.out / f"pretrain-{name}"
        encoders[name] = out / "pretrain.pt"
        if args.reuse_pretrained and encoders[name].is_file():
            continue
        train_central(args.data, out, phases=["pretrain"], epochs={"pretrain": args.pretrain_epochs}, lr=args.pretrain_lr,
                      alignment_weight=alignment_weight, **common)
        print(f"pretrained {name} in {time.perf_counter() - start:.0f} s", flush=True)

    results: dict[str, dict[str, list[dict]]] = {}
    for name, init in encoders.items():
        for fraction in (0.1, 1.0):
            runs = []
            for seed in range(args.seeds if fraction < 1 else 1):
                summary = train_central(args.data, args.out / f"finetune-{args.finetune_mode}-{name}-{fraction}-{seed}", phases=["finetune"],
                                        init=init, epochs={"finetune": args.finetune_epochs}, label_fraction=fraction,
                                        seed=seed, finetune_mode=args.finetune_mode, **common)
                runs.append(summary["phases"]["finetune"]["test"])
            results.setdefault(name, {})[str(fraction)] = runs
            print(f"{name:12s} labels {fraction:>4.0%}: mean AUROC {_mean(runs, K.MEAN_AUROC):.3f}  "
                  f"mean R² {_mean(runs, K.MEAN_R2):.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)

    generator = {} if args.skip_generator else train_central(args.data, args.out / "generator", phases=["generator"], init=encoders["cmr-aligned"],
                              epochs={"generator": args.generator_epochs}, preset=args.preset, sites=sites,
                              bootstrap=0, generate_samples=64)["phases"]["generator"]["test"]
    if generator:
        print(f"generator: SSIM {generator.get(K.SSIM, float('nan')):.3f} vs mean clip {generator.get(K.BASELINE_SSIM, float('nan')):.3f}; "
              f"PSNR {generator.get(K.PSNR, float('nan')):.2f} vs {generator.get(K.BASELINE_PSNR, float('nan')):.2f} dB; "
              f"EF-proxy MAE {generator.get(K.EF_PROXY_MAE, float('nan')):.1f} vs {generator.get(K.BASELINE_EF_PROXY_MAE, float('nan')):.1f}")

    table = _table(results)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"evidence-{args.finetune_mode}.json").write_text(json.dumps(finite_or_null({"finetune": results, "generator": generator,
                                                                       "seconds": time.perf_counter() - start}), indent=2))
    _plot(results, args.out / f"evidence-{args.finetune_mode}.png")
    print(f"wrote evidence-{args.finetune_mode}.json and .png in {args.out}")


def _mean(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs if r.get(key) is not None and np.isfinite(r[key])]
    return float(np.mean(values)) if values else float("nan")


def _table(results: dict) -> str:
    keys = [per_target("auroc", d) for d in DISEASES] + [K.MEAN_AUROC] + [per_target("r2", i) for i in INDICATORS] + [K.MEAN_R2]
    columns = [(name, fraction) for name in results for fraction in results[name]]
    lines = ["metric".ljust(30) + "".join(f"{n[:11]}@{float(f):.0%}".rjust(18) for n, f in columns)]
    for key in keys:
        cells = []
        for name, fraction in columns:
            values = [r[key] for r in results[name][fraction] if r.get(key) is not None and np.isfinite(r[key])]
            cells.append(f"{np.mean(values):.3f}±{np.std(values):.3f}" if len(values) > 1 else
                         (f"{values[0]:.3f}" if values else "n/a"))
        lines.append(key.ljust(30) + "".join(c.rjust(18) for c in cells))
    return "\n".join(lines)


def _plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, label in ((axes[0], K.MEAN_AUROC, "mean AUROC (5 diseases)"), (axes[1], K.MEAN_R2, "mean R² (9 indicators)")):
        for offset, name in enumerate(results):
            fractions = list(results[name])
            means = [_mean(results[name][f], key) for f in fractions]
            spreads = [np.std([r[key] for r in results[name][f] if r.get(key) is not None]) for f in fractions]
            x = np.arange(len(fractions)) + (offset - 1) * 0.25
            ax.bar(x, means, width=0.25, yerr=spreads, label=name, capsize=3)
        ax.set_xticks(range(len(fractions)), [f"{float(f):.0%} labels" for f in fractions])
        ax.set_title(label)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
