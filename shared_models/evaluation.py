"""Evaluation of one phase over a loader: aggregate metrics only (no per-subject outputs leave this
function), as flat {name: float} so that Flower's MetricRecord and the metrics JSON take them as they are.

Names (protocol.site_metrics.MetricKey): loss and num-examples; pretrain: masked ECG loss, alignment
cosine and ECG->CMR retrieval (top-1, top-5, median rank); generator: generator loss, and with `generate_samples` SSIM, PSNR and the
EF-proxy error (+ baselines for a given reference clip); finetune: per-target r2/pearson/mae/auroc/auprc
(+ "_low"/"_high" bootstrap bounds) and their means. With `bootstrap` resamples, the headline figures
(retrieval, SSIM, mean AUROC and R²) also get their percentile 95 % interval as "<key>_low"/"<key>_high".
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from shared_models import metrics
from shared_models.cardiacnets import CardiacNets
from protocol.site_metrics import MetricKey, gain_key, interval_keys, per_target, plain
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
            collected.add(masked_ecg_per_sample=per_sample)
            if (pair := model.paired_unit_embeddings(batch)) is not None:
                collected.add(ecg_embedding=pair[0], cmr_embedding=pair[1])
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
    result = {MetricKey.LOSS: loss_sum / n if n else float("nan"), MetricKey.NUM_EXAMPLES: float(n)}
    if phase == "pretrain":
        result.update(_pretrain_metrics(collected, bootstrap, seed))
    elif phase == "generator":
        result[MetricKey.GENERATOR_LOSS] = result[MetricKey.LOSS]
        result.update(_generator_metrics(collected, reference_clip, bootstrap, seed, model.config.generator.tubelet_pixels))
    else:
        result.update(_finetune_metrics(collected, bootstrap, seed))
    return plain(result)


@torch.no_grad()
def paired_gains(model: CardiacNets, reference: CardiacNets, loader: Iterable, phase: str, *, bootstrap: int = 0,
                 device: str = "auto", seed: int = 0) -> dict[str, float]:
    """`model`'s held-out figures minus `reference`'s on the same subjects ('gain/<key>', protocol.site_metrics.GAIN_KEYS),
    each with a paired bootstrap 95 % interval: both models scored on the same resampled subjects, so the interval
    is the gain's own, not two overlapping ones."""
    if phase == "finetune":
        mine, theirs = (_finetune_outputs(m, loader, device) for m in (model, reference))
        statistics = {MetricKey.MEAN_AUROC: lambda o, i: metrics.mean_over_targets(metrics.auroc, o[1][i], o[0][i], o[2][i]),
                      MetricKey.MEAN_R2: lambda o, i: metrics.mean_over_targets(metrics.r2, o[4][i], o[3][i], o[5][i])}
    elif phase == "pretrain":
        mine, theirs = (_retrieval_ranks(m, loader, device) for m in (model, reference))
        statistics = {MetricKey.RETRIEVAL_TOP5: lambda ranks, i: float((ranks[i] <= 5).mean())}
    else:
        return {}
    count = len(mine[0]) if phase == "finetune" else len(mine)
    if count < 2:
        return {}
    out = {}
    for key, statistic in statistics.items():
        difference = lambda i, f=statistic: f(mine, i) - f(theirs, i)  # noqa: E731
        out[gain_key(key)] = difference(np.arange(count))
        if bootstrap:
            out.update(zip(interval_keys(gain_key(key)), metrics.bootstrap_interval(difference, count, n=bootstrap, seed=seed)))
    return out


def _finetune_outputs(model: CardiacNets, loader: Iterable, device: str) -> tuple[np.ndarray, ...]:
    """(disease probabilities, labels, label masks, indicators, their targets, their masks) over a loader."""
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    c = _Collected()
    for batch in loader:
        batch = {k: v.to(torch_device) for k, v in batch.items()}
        indicators, logits = model.heads(batch)
        c.add(p=logits.sigmoid(), y=batch["diseases"], m=batch["disease_mask"], i=unstandardise_indicators(indicators),
              t=batch["indicators"], im=batch["indicator_mask"])
    return c["p"], c["y"], c["m"].astype(bool), c["i"], c["t"], c["im"].astype(bool)


def _retrieval_ranks(model: CardiacNets, loader: Iterable, device: str) -> np.ndarray:
    """Rank of each paired subject's own CMR among all, from its ECG (1 = first)."""
    torch_device = resolve_device(device)
    model.to(torch_device).eval()
    c = _Collected()
    for batch in loader:
        if (pair := model.paired_unit_embeddings({k: v.to(torch_device) for k, v in batch.items()})) is not None:
            c.add(e=pair[0], m=pair[1])
    if c.count("e") < 2:
        return np.zeros(0)
    return metrics.retrieval_ranks(c["e"] @ c["m"].T)


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


def _with_interval(out: dict, key: str, per_subject: np.ndarray, bootstrap: int, seed: int, statistic=np.mean) -> None:
    """out[key] = statistic over subjects, and with `bootstrap` resamples its percentile 95 % interval."""
    out[key] = float(statistic(per_subject))
    if bootstrap:
        out.update(zip(interval_keys(key), metrics.bootstrap_statistic(per_subject, statistic, n=bootstrap, seed=seed)))


def _pretrain_metrics(c: _Collected, bootstrap: int, seed: int) -> dict[str, float]:
    out = {MetricKey.MASKED_ECG: float(c["masked_ecg_per_sample"].mean()) if c.count("masked_ecg_per_sample") else float("nan")}
    if c.count("ecg_embedding") >= 2:
        ecg, cmr = c["ecg_embedding"], c["cmr_embedding"]
        similarity = ecg @ cmr.T  # (paired, paired) cosine
        out[MetricKey.ALIGNMENT_COSINE] = float(np.diag(similarity).mean())
        rank = metrics.retrieval_ranks(similarity)
        _with_interval(out, MetricKey.RETRIEVAL_TOP1, (rank == 1).astype(float), bootstrap, seed)
        _with_interval(out, MetricKey.RETRIEVAL_TOP5, (rank <= 5).astype(float), bootstrap, seed)
        _with_interval(out, MetricKey.RETRIEVAL_MEDIAN_RANK, rank.astype(float), bootstrap, seed, np.median)
        out[MetricKey.RETRIEVAL_CHANCE] = 1.0 / len(ecg)
        out[MetricKey.ECG_PAIRWISE_COSINE] = _mean_pairwise_cosine(ecg)
        out[MetricKey.CMR_PAIRWISE_COSINE] = _mean_pairwise_cosine(cmr)
    return out


def _mean_pairwise_cosine(unit: np.ndarray) -> float:
    """Mean cosine over pairs of different rows of unit vectors."""
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * (n - 1)))


def _fidelity_metrics(real: np.ndarray, generated: np.ndarray, bootstrap: int, seed: int) -> dict[str, float]:
    """Per-patient fidelity: EF-proxy correlation (with its interval) and area-curve correlation."""
    correlation, finite = metrics.ef_proxy_correlation(real, generated)
    out = {MetricKey.EF_PROXY_CORRELATION: correlation,
           MetricKey.AREA_CURVE_CORRELATION: metrics.area_curve_correlation(real, generated)}
    if bootstrap and finite.sum() > 2:
        real_ok, generated_ok = real[finite], generated[finite]
        proxies = np.array([[metrics.blood_pool_ef(r), metrics.blood_pool_ef(g)] for r, g in zip(real_ok, generated_ok)])
        out.update(zip(interval_keys(MetricKey.EF_PROXY_CORRELATION), metrics.bootstrap_interval(
            lambda i: metrics.pearson_r(proxies[i, 0], proxies[i, 1]), len(proxies), n=bootstrap, seed=seed)))
    return out


def _generator_metrics(c: _Collected, reference_clip: np.ndarray | None, bootstrap: int, seed: int,
                       grid: int = 0) -> dict[str, float]:
    if not c.count("real"):
        return {}
    real, generated = c["real"], c["generated"]
    out = {
        MetricKey.PSNR: float(np.mean([metrics.psnr(r, g) for r, g in zip(real, generated)])),
        MetricKey.EF_PROXY_MAE: _ef_proxy_mae(real, generated),
        MetricKey.GENERATED_SAMPLES: float(len(real)),
    }
    _with_interval(out, MetricKey.SSIM, np.array([metrics.ssim(r, g) for r, g in zip(real, generated)]), bootstrap, seed)
    out.update(_fidelity_metrics(real, generated, bootstrap, seed))
    out[MetricKey.HIGH_FREQUENCY_RATIO] = (float(np.mean([metrics.high_frequency_share(g) for g in generated]))
                                           / max(float(np.mean([metrics.high_frequency_share(r) for r in real])), 1e-12))
    out[MetricKey.GRID_CONTRAST] = float(np.mean([metrics.grid_contrast(g, grid) for g in generated])) if grid else float("nan")
    if reference_clip is not None:
        baseline = np.broadcast_to(reference_clip, real.shape)
        _with_interval(out, MetricKey.BASELINE_SSIM, np.array([metrics.ssim(r, reference_clip) for r in real]),
                       bootstrap, seed)
        out[MetricKey.BASELINE_PSNR] = float(np.mean([metrics.psnr(r, reference_clip) for r in real]))
        out[MetricKey.BASELINE_EF_PROXY_MAE] = _ef_proxy_mae(real, baseline)
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
        out[per_target("r2", name)] = metrics.r2(target[labelled, i], prediction[labelled, i])
        out[per_target("pearson", name)] = metrics.pearson_r(target[labelled, i], prediction[labelled, i])
        out[per_target("mae", name)] = metrics.mae(target[labelled, i], prediction[labelled, i])
    probability, labels, mask = c["disease_prob"], c["disease_target"], c["disease_mask"].astype(bool)
    for i, name in enumerate(DISEASES):
        y, p = labels[mask[:, i], i], probability[mask[:, i], i]
        out[per_target("auroc", name)] = metrics.auroc(y, p)
        out[per_target("auprc", name)] = metrics.auprc(y, p)
        if bootstrap:
            out[f"auroc/{name}_low"], out[f"auroc/{name}_high"] = metrics.bootstrap_ci(metrics.auroc, y, p, n=bootstrap, seed=seed)
            out[f"auprc/{name}_low"], out[f"auprc/{name}_high"] = metrics.bootstrap_ci(metrics.auprc, y, p, n=bootstrap, seed=seed)
    out[MetricKey.MEAN_R2] = _nanmean([out[per_target("r2", name)] for name in INDICATORS])
    out[MetricKey.MEAN_AUROC] = _nanmean([out[per_target("auroc", name)] for name in DISEASES])
    if bootstrap:  # the means' intervals: subjects resampled, every target's metric recomputed on the resample
        indicator_mask, disease_mask = c["indicator_mask"].astype(bool), c["disease_mask"].astype(bool)
        for key, metric, y, p, m in ((MetricKey.MEAN_AUROC, metrics.auroc, labels, probability, disease_mask),
                                     (MetricKey.MEAN_R2, metrics.r2, target, prediction, indicator_mask)):
            low, high = metrics.bootstrap_interval(lambda i: metrics.mean_over_targets(metric, y[i], p[i], m[i]),
                                                   len(prediction), n=bootstrap, seed=seed)
            if np.isfinite(low):
                out.update(zip(interval_keys(key), (low, high)))
    return out


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")
