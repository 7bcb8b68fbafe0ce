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


def bootstrap_interval(statistic, n_subjects: int, *, n: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of statistic(index) over `n` resamples of the subjects 0..n_subjects-1
    (`statistic` takes the resampled subject indices); resamples where it is undefined (NaN) are skipped."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n_subjects, n_subjects)) for _ in range(n if n_subjects else 0)]
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_ci(metric, labels: np.ndarray, scores: np.ndarray, *, n: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of metric(labels, scores) over resampled subjects."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    return bootstrap_interval(lambda i: metric(labels[i], scores[i]), len(labels), n=n, level=level, seed=seed)


def bootstrap_statistic(values: np.ndarray, statistic=np.mean, *, n: int = 1000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of statistic(values) over resampled subjects (one value per subject)."""
    values = np.asarray(values, float)
    return bootstrap_interval(lambda i: statistic(values[i]), len(values), n=n, level=level, seed=seed)


def mean_over_targets(metric, targets: np.ndarray, predictions: np.ndarray, labelled: np.ndarray) -> float:
    """The mean of metric(target, prediction) over the columns (targets) where it is defined, each column on
    its labelled rows only; NaN when it is defined for none. (subjects, targets) arrays."""
    values = [metric(targets[labelled[:, j], j], predictions[labelled[:, j], j]) for j in range(targets.shape[1])]
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


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
    areas = blood_pool_areas(clip, threshold, roi)
    return float(100 * (areas.max() - areas.min()) / areas.max()) if areas.max() > 0 else float("nan")


def blood_pool_areas(clip: np.ndarray, threshold: float = 0.6, roi: float = 0.5) -> np.ndarray:
    """(F,) bright blood-pool area (pixels) in the central ROI of each frame: the area curve over the cycle."""
    clip = np.asarray(clip, float)
    F, H, W = clip.shape
    h0, w0 = int(H * (1 - roi) / 2), int(W * (1 - roi) / 2)
    return (clip[:, h0:H - h0, w0:W - w0] > threshold).reshape(F, -1).sum(1).astype(float)


def high_frequency_share(clip: np.ndarray) -> float:
    """Share of each frame's spatial spectral energy (mean removed) above half the Nyquist frequency, averaged
    over frames: a blurred clip has less than a real one, a noisy or blocky one more."""
    frames = np.asarray(clip, float)
    frames = frames - frames.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(frames)) ** 2
    fy, fx = (np.abs(np.fft.fftfreq(n)) for n in frames.shape[-2:])
    high = (fy[:, None] > 0.25) | (fx[None, :] > 0.25)
    total = power.sum(axis=(-2, -1))
    return float(np.mean(power[..., high].sum(-1) / np.maximum(total, 1e-12)))


def grid_contrast(clip: np.ndarray, period: int) -> float:
    """Mean absolute step between neighbouring pixels across the borders of a `period`-pixel grid over the
    mean step elsewhere: about 1 for a real image, above 1 where a tubelet grid shows."""
    frames = np.asarray(clip, float)
    steps = [np.abs(np.diff(frames, axis=axis)) for axis in (-1, -2)]
    border = (np.arange(frames.shape[-1] - 1) % period) == period - 1  # step from pixel k*period-1 to k*period
    across = np.mean([steps[0][..., border].mean(), steps[1][..., border, :].mean()])
    within = np.mean([steps[0][..., ~border].mean(), steps[1][..., ~border, :].mean()])
    if within <= 1e-12:  # flat inside every tile: all the structure is the grid
        return float("inf") if across > 1e-12 else float("nan")
    return float(across / within)


def ef_proxy_correlation(real: np.ndarray, generated: np.ndarray) -> tuple[float, np.ndarray]:
    """(Pearson r over subjects between the generated and the real clip's EF proxy, the finite pairs' mask).
    The mean clip gives every subject the same proxy: r is undefined there, and 0 is its honest value."""
    pairs = np.array([[blood_pool_ef(r), blood_pool_ef(g)] for r, g in zip(real, generated)])
    finite = np.isfinite(pairs).all(1)
    return pearson_r(pairs[finite, 0], pairs[finite, 1]) if finite.sum() > 2 else float("nan"), finite


def area_curve_correlation(real: np.ndarray, generated: np.ndarray) -> float:
    """Pearson r, over every subject and frame, between the generated and the real blood-pool area curves
    once the mean curve over the subjects is taken off each: how well the generated clip tracks this patient's
    own cycle, not the average one (0 for the mean clip, whose curve is the same for everyone)."""
    real_areas = np.array([blood_pool_areas(r) for r in real])
    generated_areas = np.array([blood_pool_areas(g) for g in generated])
    return pearson_r((real_areas - real_areas.mean(0)).ravel(), (generated_areas - generated_areas.mean(0)).ravel())


def clip_scores(real: np.ndarray, clips: np.ndarray) -> tuple[float, float]:
    """(mean SSIM, mean EF-proxy absolute error) of clips against the real ones, pair by pair; clips whose EF
    proxy is undefined (no blood pool found) are left out of the error."""
    ssim_mean = float(np.mean([ssim(r, c) for r, c in zip(real, clips)]))
    errors = [abs(blood_pool_ef(r) - blood_pool_ef(c)) for r, c in zip(real, clips)]
    return ssim_mean, float(np.nanmean(errors))
