"""Centralized reference training: every site's data pooled in one place, which only a synthetic cohort
allows. It is the upper bound the federated study is compared with, and it runs the same training loop.

Outputs in `out`: `<phase>.pt` checkpoints, `metrics.json` (per phase: training summary, loss per epoch,
validation and test metrics) and `loss_<phase>.png`; after the generator phase `generated_test.png` shows
real test clips above the generated ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from sitedata.pooling import data_hash, labelled_fraction, load_sites, pooled
from sitedata.site_data import PreparedSite
from sitedata.site_dataset import mean_cmr_clip
from shared_models.cardiacnets import CardiacNets, build_model
from shared_models.checkpoint import load_checkpoint, save_checkpoint
from shared_models.evaluation import evaluate
from protocol.jsonable import finite_or_null
from shared_models.training import TrainOptions, train_phase


def disease_pos_weight(dataset: Dataset) -> torch.Tensor:
    """negatives / positives per disease in the training data (capped at 10), for class-weighted BCE."""
    labels = torch.stack([item["diseases"] for item in _iterate(dataset)])
    masks = torch.stack([item["disease_mask"] for item in _iterate(dataset)]).float()
    positives = (labels * masks).sum(0)
    negatives = ((1 - labels) * masks).sum(0)
    return (negatives / positives.clamp(min=1)).clamp(1.0, 10.0)


def _iterate(dataset: Dataset):
    return (dataset[i] for i in range(len(dataset)))


def train_central(
    data: Path,
    out: Path,
    *,
    phases: list[str],
    preset: str = "small",
    init: Path | None = None,
    epochs: dict[str, int] | None = None,
    lr: float = 1e-3,
    batch_size: int = 32,
    label_fraction: float = 1.0,
    finetune_mode: str = "full",
    alignment_weight: float = 1.0,
    generate_samples: int = 8,
    bootstrap: int = 200,
    seed: int = 0,
    device: str = "auto",
    sites: list[PreparedSite] | None = None,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> dict:
    """Train `phases` in order on the pooled cohort, each starting from the previous one's weights."""
    epochs = {"pretrain": 20, "generator": 30, "finetune": 20} | (epochs or {})
    sites = sites if sites is not None else load_sites(data)
    train, val, test = pooled(sites, "train"), pooled(sites, "val"), pooled(sites, "test")
    if len(train) == 0:
        raise ValueError(f"{data}: no usable training samples")
    torch.manual_seed(seed)
    model: CardiacNets = load_checkpoint(init)[0] if init else build_model(preset)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"preset": model.config.preset, "data_hash": data_hash(sites), "label_fraction": label_fraction,
               "finetune_mode": finetune_mode, "train_samples": len(train), "phases": {}}
    step = 0
    for phase in phases:
        options = TrainOptions(phase=phase, epochs=1, lr=lr, finetune_mode=finetune_mode,
                               alignment_weight=alignment_weight, seed=seed, device=device)
        phase_data = labelled_fraction(train, label_fraction, seed) if phase == "finetune" else train
        loader = DataLoader(phase_data, batch_size=batch_size, shuffle=True, drop_last=len(phase_data) > batch_size,
                            generator=torch.Generator().manual_seed(seed))
        pos_weight = disease_pos_weight(phase_data) if phase == "finetune" else None
        history = []
        for epoch in range(epochs[phase]):
            options.seed = seed + epoch
            result = train_phase(model, loader, options, pos_weight=pos_weight,
                                 progress=(lambda s, t, loss, e=epoch: progress(phase, e * t + s, epochs[phase] * t, loss)) if progress else None)
            step += result.steps
            history.append(asdict(result))
        val_loader, test_loader = (DataLoader(d, batch_size=64) for d in (val, test))
        reference = mean_cmr_clip(train) if phase == "generator" else None
        record = {
            "train_examples": len(phase_data), "history": history,
            # retrieval and embedding spread on the data it trained on: chance here means collapse, not overfit
            **({"train": evaluate(model, DataLoader(train, batch_size=64), phase, device=device)} if phase == "pretrain" else {}),
            "val": evaluate(model, val_loader, phase, device=device),
            "test": evaluate(model, test_loader, phase, bootstrap=bootstrap, device=device,
                             generate_samples=generate_samples if phase == "generator" else 0, reference_clip=reference),
        }
        summary["phases"][phase] = record
        save_checkpoint(out / f"{phase}.pt", model, phase=phase, step=step, data_hash=summary["data_hash"])
        _plot_loss(history, out / f"loss_{phase}.png", phase)
        if phase == "generator" and generate_samples:
            _save_generation_strip(model, test, out / "generated_test.png", device)
    (out / "metrics.json").write_text(json.dumps(finite_or_null(summary), indent=2))
    return summary


def _plot_loss(history: list[dict], path: Path, phase: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(history) + 1), [h["mean_loss"] for h in history], marker="o", markersize=3)
    ax.set(xlabel="epoch", ylabel="training loss", title=f"{phase} (centralized)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _save_generation_strip(model: CardiacNets, test: Dataset, path: Path, device: str, n: int = 4) -> None:
    from shared_models.cine_media import filmstrip
    from shared_models.training import resolve_device

    items = [item for item in _iterate(test) if bool(item["has_cmr"])][:n]
    if not items:
        return
    batch = {k: torch.stack([item[k] for item in items]).to(resolve_device(device)) for k in items[0]}
    generated = model.generate(batch, generator=torch.Generator(device=batch["ecg"].device).manual_seed(0)).cpu().numpy()
    rows = [clip for pair in zip(batch["cmr"].cpu().numpy(), generated) for clip in pair]
    filmstrip(rows, every=2, scale=2).save(path)
