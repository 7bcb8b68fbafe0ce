"""What a site may release of its validation metrics. They are computed without DP, so a metric over a handful
of patients is close to a statement about one of them (an AUROC over one positive is that patient's rank). A
metric leaves the site only when every class it rests on has at least `min_count` patients. Below `min_count`
validation patients nothing leaves but a withheld flag and a coarse count ("<20"): not the loss, not the exact count.

What remains: above the floor the loss and the exact count leave, and a metric over `min_count` patients still
moves when one of them is added or removed; these are not DP guarantees (README, threat model).
"""

from __future__ import annotations

import numpy as np

from sitedata.site_data import SubjectEntry
from protocol.site_metrics import MetricKey as K
from protocol.site_metrics import per_target
from shared_models.targets import DISEASES, INDICATORS

ALWAYS = {K.LOSS, K.NUM_EXAMPLES}
PAIRED = {K.ALIGNMENT_COSINE, K.RETRIEVAL_TOP1, K.RETRIEVAL_CHANCE, K.ECG_PAIRWISE_COSINE, K.CMR_PAIRWISE_COSINE, K.SSIM, K.PSNR, K.EF_PROXY_MAE, K.GENERATED_SAMPLES,
          K.BASELINE_SSIM, K.BASELINE_PSNR, K.BASELINE_EF_PROXY_MAE, K.GENERATOR_LOSS}


def withheld(min_count: int) -> dict:
    """All an evaluation reply says below the release floor."""
    return {K.WITHHELD: 1, K.COUNT_BAND: f"<{min_count}"}


def releasable(metrics: dict[str, float], subjects: list[SubjectEntry], min_count: int) -> dict:
    """The subset of `metrics` whose every class has at least `min_count` patients, means recomputed over it;
    `withheld(...)` alone below `min_count` validation patients."""
    if len(subjects) < min_count:
        return withheld(min_count)
    diseases = np.array([s.diseases for s in subjects]).reshape(len(subjects), len(DISEASES))
    indicators = np.array([s.indicators for s in subjects]).reshape(len(subjects), len(INDICATORS))
    pairs = sum(1 for s in subjects if s.cmr_key)
    kept_diseases = {d for i, d in enumerate(DISEASES)
                     if (diseases[:, i] == 1).sum() >= min_count and (diseases[:, i] == 0).sum() >= min_count}
    kept_indicators = {n for i, n in enumerate(INDICATORS) if np.isfinite(indicators[:, i]).sum() >= min_count}
    out = {}
    for key, value in metrics.items():
        kind, _, target = key.partition("/")
        target = target.removesuffix("_low").removesuffix("_high")
        if key in ALWAYS:
            keep = True
        elif kind in ("auroc", "auprc") and target:
            keep = target in kept_diseases
        elif kind in ("r2", "pearson", "mae") and target:
            keep = target in kept_indicators
        elif key in PAIRED:
            keep = pairs >= min_count
        elif key in (K.MEAN_AUROC, K.MEAN_R2):
            keep = False  # recomputed below over what may leave
        else:
            keep = len(subjects) >= min_count  # e.g. the masked-ECG loss over every validation ECG
        if keep:
            out[key] = value
    aurocs = [out[per_target("auroc", d)] for d in sorted(kept_diseases) if per_target("auroc", d) in out]
    r2s = [out[per_target("r2", n)] for n in sorted(kept_indicators) if per_target("r2", n) in out]
    for key, values in ((K.MEAN_AUROC, aurocs), (K.MEAN_R2, r2s)):
        finite = [v for v in values if np.isfinite(v)]
        if finite:
            out[key] = float(np.mean(finite))
    return out
