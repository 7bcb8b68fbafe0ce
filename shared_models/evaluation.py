"""Evaluation of one phase over a loader: aggregate metrics only (no per-subject outputs leave this
function), as flat {name: float} so that Flower's MetricRecord and the metrics JSON take them as they are.

Names: "loss", "num-examples"; pretrain: "masked_ecg", "alignment_cosine", "retrieval_top1";
generator: "generator_loss", and with `generate_samples` "ssim", "psnr", "ef_proxy_mae" (+ "baseline_*"
for a given reference clip); finetune: "r2/<indicator>", "pearson/<indicator>", "mae/<indicator>",
"auroc/<disease>", "auprc/<disease>" (+ "_low"/"_high" bootstrap bounds), "mean_r2", "mean_auroc".
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from shared_models import metrics
from shared_models.cardiacnets import CardiacNets
from shared_models.targets import DISEASES, INDICATORS
from shared_models.training import contributing, resolve_device, supervised_loss, unstandardise_indicators


@torch.no_grad()
def evaluate(model: CardiacNets, loader: Iterable, phase: str, *, bootstrap: int = 0, generate_samples: int = 0,
             reference_clip: np.ndarray | None = None, device: str = "auto", seed: int = 0) -> dict[str, float]:
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    generator = torch.Generator(device=torch_device).manual_seed(seed)  # same masks/noise for every evaluation
    loss_sum, n, collected = 0.0, 0, _Collected()
    for batch in loader:
        batch = {k: v.to(torch_device) for k, v in batch.items()}
        count = contributing(batch, phase)
        if count == 0:
            continue
        if phase == "pretrain":
            per_sample = model.masked_ecg_loss(batch, generator)
            collected.add(masked_ecg=per_sample)
            paired = batch["has_cmr"]
            if paired.any():
                subset = {k: v[paired] for k, v in batch.items()}
                collected.add(ecg_embedding=F.normalize(model.ecg_embedding(subset), dim=-1),
                              cmr_embedding=F.normalize(model.cmr_embedding(subset["cmr"]), dim=-1))
            loss = per_sample.mean()
        elif phase == "generator":
            per_sample = model.generator_loss(batch, generator)
            loss = per_sample.sum() / count
            if generate_samples > collected.count("real"):
                paired = batch["has_cmr"]
                subset = {k: v[paired][: generate_samples - collected.count("real")] for k, v in batch.items()}
                collected.add(real=subset["cmr"], generated=model.generate(subset, generator=generator))
        else:
            indicators, logits = model.heads(batch)
            loss = supervised_loss(indicators, logits, batch).sum() / count
            collected.add(indicators=unstandardise_indicators(indicators), indicator_target=batch["indicators"],
                          indicator_mask=batch["indicator_mask"], disease_prob=logits.sigmoid(),
                          disease_target=batch["diseases"], disease_mask=batch["disease_mask"])
        loss_sum += float(loss) * count
        n += count
    result = {"loss": loss_sum / n if n else float("nan"), "num-examples": float(n)}
    if phase == "pretrain":
        result.update(_pretrain_metrics(collected))
    elif phase == "generator":
        result["generator_loss"] = result["loss"]
        result.update(_generator_metrics(collected, reference_clip))
    else:
        result.update(_finetune_metrics(collected, bootstrap, seed))
    return result


class _Collected:
    """Per-batch tensors gathered on the CPU and concatenated on demand."""

    def __init__(self):
        self.parts: dict[str, list[np.ndarray]] = {}

    def add(self, **tensors: torch.Tensor) -> None:
        for name, tensor in tensors.items():
            self.parts.setdefault(name, []).append(tensor.float().cpu().numpy())

    def count(self, name: str) -> int:
        return sum(len(p) for p in self.parts.get(name, []))

    def __getitem__(self, name: str) -> np.ndarray:
        return np.concatenate(self.parts[name]) if name in self.parts else np.zeros((0,))


def _pretrain_metrics(c: _Collected) -> dict[str, float]:
    out = {"masked_ecg": float(c["masked_ecg"].mean()) if c.count("masked_ecg") else float("nan")}
    if c.count("ecg_embedding") >= 2:
        ecg, cmr = c["ecg_embedding"], c["cmr_embedding"]
        similarity = ecg @ cmr.T  # (paired, paired) cosine
        out["alignment_cosine"] = float(np.diag(similarity).mean())
        out["retrieval_top1"] = float((similarity.argmax(1) == np.arange(len(ecg))).mean())
        out["retrieval_chance"] = 1.0 / len(ecg)
    return out


def _generator_metrics(c: _Collected, reference_clip: np.ndarray | None) -> dict[str, float]:
    if not c.count("real"):
        return {}
    real, generated = c["real"], c["generated"]
    out = {
        "ssim": float(np.mean([metrics.ssim(r, g) for r, g in zip(real, generated)])),
        "psnr": float(np.mean([metrics.psnr(r, g) for r, g in zip(real, generated)])),
        "ef_proxy_mae": _ef_proxy_mae(real, generated),
        "generated_samples": float(len(real)),
    }
    if reference_clip is not None:
        baseline = np.broadcast_to(reference_clip, real.shape)
        out["baseline_ssim"] = float(np.mean([metrics.ssim(r, reference_clip) for r in real]))
        out["baseline_psnr"] = float(np.mean([metrics.psnr(r, reference_clip) for r in real]))
        out["baseline_ef_proxy_mae"] = _ef_proxy_mae(real, baseline)
    return out


def _ef_proxy_mae(real: np.ndarray, generated: np.ndarray) -> float:
    errors = [abs(metrics.blood_pool_ef(r) - metrics.blood_pool_ef(g)) for r, g in zip(real, generated)]
    errors = [e for e in errors if np.isfinite(e)]
    return float(np.mean(errors)) if errors else float("nan")


def _finetune_metrics(c: _Collected, bootstrap: int, seed: int) -> dict[str, float]:
    out: dict[str, float] = {}
    if not c.count("indicators"):
        return out
    prediction, target, mask = c["indicators"], c["indicator_target"], c["indicator_mask"].astype(bool)
    for i, name in enumerate(INDICATORS):
        labelled = mask[:, i]
        out[f"r2/{name}"] = metrics.r2(target[labelled, i], prediction[labelled, i])
        out[f"pearson/{name}"] = metrics.pearson_r(target[labelled, i], prediction[labelled, i])
        out[f"mae/{name}"] = metrics.mae(target[labelled, i], prediction[labelled, i])
    probability, labels, mask = c["disease_prob"], c["disease_target"], c["disease_mask"].astype(bool)
    for i, name in enumerate(DISEASES):
        y, p = labels[mask[:, i], i], probability[mask[:, i], i]
        out[f"auroc/{name}"] = metrics.auroc(y, p)
        out[f"auprc/{name}"] = metrics.auprc(y, p)
        if bootstrap:
            out[f"auroc/{name}_low"], out[f"auroc/{name}_high"] = metrics.bootstrap_ci(metrics.auroc, y, p, n=bootstrap, seed=seed)
            out[f"auprc/{name}_low"], out[f"auprc/{name}_high"] = metrics.bootstrap_ci(metrics.auprc, y, p, n=bootstrap, seed=seed)
    out["mean_r2"] = _nanmean([out[f"r2/{name}"] for name in INDICATORS])
    out["mean_auroc"] = _nanmean([out[f"auroc/{name}"] for name in DISEASES])
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
