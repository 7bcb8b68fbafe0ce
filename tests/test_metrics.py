"""Evaluation metrics against values computed by hand."""

import math

import numpy as np
import pytest

from shared_models import metrics


def test_auroc_counts_correctly_ordered_pairs():
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.4, 0.35, 0.1])
    # positive/negative pairs: (0.9>0.4) (0.9>0.1) (0.35<0.4) (0.35>0.1) -> 3 of 4
    assert metrics.auroc(labels, scores) == pytest.approx(0.75)
    assert metrics.auroc(np.array([1, 0]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # a tie counts half
    assert math.isnan(metrics.auroc(np.array([1, 1]), np.array([0.2, 0.3])))  # one class only


def test_auprc_is_mean_precision_at_each_positive():
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.4, 0.35, 0.1])
    # ranked: pos (precision 1/1), neg, pos (precision 2/3)
    assert metrics.auprc(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.auprc(np.array([1, 1, 0]), np.array([0.9, 0.8, 0.1])) == pytest.approx(1.0)


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    scores = labels * 0.6 + rng.random(200)
    point = metrics.auroc(labels, scores)
    low, high = metrics.bootstrap_ci(metrics.auroc, labels, scores, n=300, seed=1)
    assert low < point < high and high - low < 0.2
    assert (low, high) == metrics.bootstrap_ci(metrics.auroc, labels, scores, n=300, seed=1)


def test_regression_metrics():
    assert metrics.r2(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0])) == pytest.approx(0.5)  # 1 - 1/2
    assert metrics.pearson_r(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)  # cov 1 / var 2
    assert metrics.mae(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])) == pytest.approx(1.0)
    assert math.isnan(metrics.r2(np.array([2.0, 2.0]), np.array([1.0, 3.0])))


def test_image_metrics():
    reference = np.zeros((2, 8, 8))
    assert metrics.psnr(reference, reference + 0.1) == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    image = np.random.default_rng(0).random((2, 16, 16))
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    # constant images: only the luminance term is left, (2 mx my + c1) / (mx^2 + my^2 + c1)
    c1 = 0.01 ** 2
    expected = (2 * 0.5 * 0.3 + c1) / (0.25 + 0.09 + c1)
    assert metrics.ssim(np.full((1, 16, 16), 0.5), np.full((1, 16, 16), 0.3)) == pytest.approx(expected)


def test_blood_pool_ef_reads_area_change():
    clip = np.zeros((3, 40, 40))
    clip[0, 15:25, 15:25] = 1.0  # 100 px at end-diastole
    clip[1, 16:24, 16:24] = 1.0
    clip[2, 15:21, 15:25] = 1.0  # 60 px at end-systole
    assert metrics.blood_pool_ef(clip) == pytest.approx(40.0)


def test_retrieval_ranks_count_ties_against_the_true_match():
    from shared_models.metrics import retrieval_ranks

    similarity = np.array([[0.9, 0.1, 0.2], [0.5, 0.4, 0.6], [0.3, 0.3, 0.3]])
    assert retrieval_ranks(similarity).tolist() == [1, 3, 3]


def test_a_bootstrap_interval_narrows_with_more_subjects_and_holds_the_estimate():
    from shared_models.metrics import bootstrap_statistic

    rng = np.random.default_rng(0)
    small, large = (rng.random(n) < 0.1 for n in (100, 2000))
    low_s, high_s = bootstrap_statistic(small.astype(float), n=300)
    low_l, high_l = bootstrap_statistic(large.astype(float), n=300)
    assert low_l <= large.mean() <= high_l and high_l - low_l < (high_s - low_s) / 2


def _beating_clips(n: int, seed: int = 0) -> np.ndarray:
    """n clips (16, 64, 64) of a bright disc whose radius beats with its own amplitude per subject."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:64, :64]
    distance = np.hypot(y - 32, x - 32)
    clips = []
    for amplitude in rng.uniform(1, 6, n):
        radii = 12 - amplitude * (1 - np.cos(np.linspace(0, 2 * np.pi, 16))) / 2
        clips.append(np.stack([1 / (1 + np.exp(distance - r)) for r in radii]) * 0.9)
    return np.array(clips)


def test_per_patient_fidelity_is_one_for_the_real_clips_and_undefined_for_the_mean_clip():
    real = _beating_clips(12)
    correlation, finite = metrics.ef_proxy_correlation(real, real)
    assert correlation == pytest.approx(1.0) and finite.all()
    assert metrics.area_curve_correlation(real, real) == pytest.approx(1.0)
    mean_clip = np.broadcast_to(real.mean(0), real.shape)
    assert np.isnan(metrics.ef_proxy_correlation(real, mean_clip)[0])  # one proxy for everyone: no correlation
    assert np.isnan(metrics.area_curve_correlation(real, mean_clip))
    shuffled = real[np.roll(np.arange(12), 5)]
    assert metrics.ef_proxy_correlation(real, shuffled)[0] < 0.9  # someone else's heart tracks worse


def test_realism_scores_tell_blur_noise_and_a_tubelet_grid_from_a_real_clip():
    from scipy import ndimage

    real = _beating_clips(1)[0]
    blurred = ndimage.gaussian_filter(real, (0, 2, 2))
    noisy = np.clip(real + np.random.default_rng(0).normal(0, 0.1, real.shape), 0, 1)
    share = metrics.high_frequency_share
    assert share(blurred) < share(real) < share(noisy)
    tiles = real.reshape(16, 8, 8, 8, 8).mean(axis=(2, 4), keepdims=True)  # one value per 8 x 8 tile
    blocky = np.broadcast_to(tiles, (16, 8, 8, 8, 8)).reshape(16, 64, 64)
    assert metrics.grid_contrast(real, 8) == pytest.approx(1.0, abs=0.3)
    assert metrics.grid_contrast(blocky, 8) > 5
