"""Evaluation metrics on numpy arrays: screening (AUROC, AUPRC), regression (R², Pearson r, MAE) from
scikit-learn, and what it lacks: bootstrap intervals, retrieval ranks, image quality (SSIM, PSNR, an
ejection-fraction proxy read off a cine clip).

Each function takes the values of one target; NaN labels are the caller's to drop. A metric that is not
defined on the data (one class only, constant targets) is NaN rather than a made-up number.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn import metrics as skm


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's), NaN with one class only."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(skm.roc_auc_score(labels, np.asarray(scores, dtype=float)))


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (scikit-learn's), NaN without a positive."""
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return float("nan")
    return float(skm.average_precision_score(labels, np.asarray(scores, dtype=float)))


def bootstrap_ci(metric, labels: np.ndarray, scores: np.ndarray, *, n: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of metric(labels, scores) over resampled subjects; resamples where the metric
    is undefined (one class only) are skipped."""
    rng = np.random.default_rng(seed)
    labels, scores = np.asarray(labels), np.asarray(scores)
    values = []
    for _ in range(n):
        index = rng.integers(0, len(labels), len(labels))
        value = metric(labels[index], scores[index])
        if np.isfinite(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_statistic(values: np.ndarray, statistic=np.mean, *, n: int = 1000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of statistic(values) over resampled subjects (one value per subject)."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(n)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def retrieval_ranks(similarity: np.ndarray) -> np.ndarray:
    """similarity (queries, candidates) with each query's true match on the diagonal -> the true match's rank
    (1 = retrieved first; ties counted against it)."""
    similarity = np.asarray(similarity, float)
    true = np.diag(similarity)[:, None]
    return (similarity >= true).sum(1)


def r2(target: np.ndarray, prediction: np.ndarray) -> float:
    """Coefficient of determination (scikit-learn's; negative when worse than the mean), NaN when undefined."""
    target, prediction = np.asarray(target, float), np.asarray(prediction, float)
    if len(target) < 2 or np.all(target == target[0]):
        return float("nan")
    return float(skm.r2_score(target, prediction))


def pearson_r(target: np.ndarray, prediction: np.ndarray) -> float:
    target, prediction = np.asarray(target, float), np.asarray(prediction, float)
    if len(target) < 2 or target.std() == 0 or prediction.std() == 0:
        return float("nan")
    return float(np.corrcoef(target, prediction)[0, 1])


def mae(target: np.ndarray, prediction: np.ndarray) -> float:
    target, prediction = np.asarray(target, float), np.asarray(prediction, float)
    return float(skm.mean_absolute_error(target, prediction)) if len(target) else float("nan")


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole clip."""
    mse = float(((np.asarray(reference, float) - np.asarray(image, float)) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """Structural similarity (Wang et al. 2004, Gaussian window sigma 1.5, K1 0.01, K2 0.03), computed per
    frame over the last two axes and averaged."""
    x, y = np.asarray(reference, float), np.asarray(image, float)
    axes_sigma = [0] * (x.ndim - 2) + [sigma, sigma]  # no smoothing across frames
    blur = lambda a: ndimage.gaussian_filter(a, axes_sigma, truncate=3.5)  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean())


def blood_pool_ef(clip: np.ndarray, threshold: float = 0.6, roi: float = 0.5) -> float:
    """An ejection-fraction proxy read off a short-axis cine (F, H, W) in [0, 1]: the bright blood-pool area
    in the central ROI at its largest (end-diastole) and smallest (end-systole) frame, (max - min) / max in
    percent. Area, not volume, so it is compared between generated and real clips, not with LVEF itself."""
    clip = np.asarray(clip, float)
    F, H, W = clip.shape
    h0, w0 = int(H * (1 - roi) / 2), int(W * (1 - roi) / 2)
    centre = clip[:, h0:H - h0, w0:W - w0]
    areas = (centre > threshold).reshape(F, -1).sum(1).astype(float)
    return float(100 * (areas.max() - areas.min()) / areas.max()) if areas.max() > 0 else float("nan")
