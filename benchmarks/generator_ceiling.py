"""How far can any ECG-conditioned generator beat the mean clip on SSIM? Scores, on the lab's reference panel:
- the mean training clip (the baseline every generated clip is held to);
- another subject's real clip (what a perfect sampler of realistic hearts scores when the ECG tells it nothing);
- ridge regression from the trained ECG features to every pixel, fitted on the public training pairs with its
  penalty chosen on the public validation split (the best a linear read-out of the ECG does);
- the study's generator (20-step DDIM, and one step: its estimate of the expected clip for this ECG).

Pixel variance that the ECG cannot know (the heart's position, the torso, coil bias, noise) sets the ceiling.

    .venv/bin/python benchmarks/generator_ceiling.py --checkpoint runs/demo-study/checkpoints/public-generator.pt \
        --study studies/demo.toml --panel data/reference-panel/site_configs/hospital-a.toml
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from server.public_data import public_sites
from server.reference_panel import LabPanel
from server.study_config import load_study_config
from shared_models import metrics
from shared_models.checkpoint import load_checkpoint
from sitedata.pooling import pooled


def paired_features(model, dataset) -> tuple[np.ndarray, np.ndarray, dict]:
    """Pooled ECG features, real clips and the stacked batch of a dataset's paired samples."""
    items = [item for item in (dataset[i] for i in range(len(dataset))) if bool(item["has_cmr"])]
    batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
    with torch.no_grad():
        features = torch.cat([model.ecg_features({k: v[s:s + 64] for k, v in batch.items()})
                              for s in range(0, len(items), 64)])
    return features.numpy(), batch["cmr"].numpy(), batch


def ridge(train_x, train_y, lam):
    """Returns predict(x): ridge from standardised features to pixels, around the training mean clip."""
    mu, sd, mean = train_x.mean(0), train_x.std(0) + 1e-6, train_y.mean(0)
    x = (train_x - mu) / sd
    weights = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ (train_y - mean).reshape(len(x), -1))
    return lambda new: np.clip(mean + (((new - mu) / sd) @ weights).reshape((len(new),) + mean.shape), 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a model after generator training")
    parser.add_argument("--study", required=True, help="the study config whose [public_data] trained it")
    parser.add_argument("--panel", required=True, help="the reference panel's site config (held-out)")
    args = parser.parse_args()
    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    sites = public_sites(load_study_config(args.study).public_data)
    train_x, train_y, _ = paired_features(model, pooled(sites, "train"))
    val_x, val_y, _ = paired_features(model, pooled(sites, "val"))
    test_x, test_y, test_batch = paired_features(model, LabPanel(args.panel).dataset)

    penalties = (1, 10, 100, 1000, 10000)
    best = max(penalties, key=lambda lam: metrics.clip_scores(val_y, ridge(train_x, train_y, lam)(val_x))[0])
    rows = {
        "mean training clip": np.broadcast_to(train_y.mean(0), test_y.shape),
        "another subject's real clip": np.roll(test_y, 1, axis=0),
        f"ridge ECG features -> pixels (penalty {best})": ridge(train_x, train_y, best)(test_x),
        "generator, 20 DDIM steps": model.generate(test_batch, generator=torch.Generator().manual_seed(0)).numpy(),
        "generator, 1 step (expected clip)": model.generate(test_batch, steps=1).numpy(),
    }
    print(f"{len(test_y)} held-out panel clips; {len(train_y)} public training pairs")
    print(f"{'clip scored against the real one':48s} {'SSIM':>6s} {'EF-proxy MAE':>13s}")
    for name, clips in rows.items():
        ssim, ef = metrics.clip_scores(test_y, clips)
        print(f"{name:48s} {ssim:6.3f} {ef:13.2f}")


if __name__ == "__main__":
    main()
