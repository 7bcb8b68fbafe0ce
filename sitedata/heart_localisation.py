"""Find the left ventricle in a short-axis cine from the cine itself, so that the model's window is cut around
the heart and not around wherever the scanner put the image centre.

1. Motion: the first temporal harmonic of every pixel (the amplitude of its change over one cardiac cycle),
   smoothed, marks the beating heart and nothing static (chest wall, liver, lungs).
2. Blood pools: in the end-diastolic frame (the frame with most signal in that region), the bright pixels
   (Otsu's threshold) are the blood pools of both ventricles, and in bSSFP any effusion.
3. The LV: each pool's core (the pixels deeper than half the pool's own depth, from a distance transform) is
   scored by its depth and roundness; the LV pool is the deep, round one, the RV a crescent. Its centroid is
   the LV centre.

A cine whose motion is too weak, or whose best pool is not round enough to be an LV, is not localised: the
caller crops at the image centre and the data report says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MIN_RELATIVE_MOTION = 0.01  # first-harmonic amplitude at the heart, relative to the bright blood signal
MIN_ROUNDNESS = 0.9  # minor/major axis of the LV pool's core; a crescent or a merged pool scores below
POOL_DEPTH_MM = (5.0, 40.0)  # half the width of a ventricle's blood pool, from a small apex to a dilated LV


@dataclass(frozen=True)
class HeartLocation:
    centre: tuple[float, float] | None  # (row, col) in pixels of the stack given; None: not localised
    reason: str = ""  # why not


def _otsu(values: np.ndarray) -> float:
    # The histogram spans the 0.5-99.5th percentiles: a few very bright pixels (a flow artefact, a marker)
    # would otherwise coarsen every bin.
    hist, edges = np.histogram(values, 256, range=tuple(np.percentile(values, [0.5, 99.5])))
    p = hist / max(hist.sum(), 1)
    w, mu = np.cumsum(p), np.cumsum(p * edges[:-1])
    between = (mu[-1] * w - mu) ** 2 / np.maximum(w * (1 - w), 1e-12)
    return float(edges[np.argmax(between)])


def locate_heart(stack: np.ndarray, spacing_mm: float) -> HeartLocation:
    """stack: (T, rows, cols) one cine slice over a cardiac cycle, square pixels of `spacing_mm`."""
    frames = stack.astype(np.float64)
    motion = ndimage.gaussian_filter(np.abs(np.fft.rfft(frames, axis=0)[1]) / len(frames), 10 / spacing_mm)
    signal = float(np.percentile(frames, 99))
    if signal <= 0 or motion.max() < MIN_RELATIVE_MOTION * signal:
        return HeartLocation(None, f"motion too weak to find the heart ({motion.max() / max(signal, 1e-12):.3f} "
                                   f"of the signal, below {MIN_RELATIVE_MOTION})")
    region = ndimage.binary_dilation(motion > 0.15 * motion.max(), iterations=max(1, int(25 / spacing_mm)))
    end_diastole = frames[int(np.argmax([frame[region].sum() for frame in frames]))]
    image = ndimage.gaussian_filter(end_diastole, 1.0)
    bright = (image > _otsu(image[region])) & region
    best = _most_lv_like_core(bright, spacing_mm)
    if best is None:
        return HeartLocation(None, "no blood pool the size of a ventricle where the image moves")
    (row, col), roundness = best
    if roundness < MIN_ROUNDNESS:
        return HeartLocation(None, f"no round blood pool where the image moves (roundness {roundness:.2f}, "
                                   f"an LV has at least {MIN_ROUNDNESS})")
    return HeartLocation((row, col))


def _most_lv_like_core(bright: np.ndarray, spacing_mm: float) -> tuple[tuple[float, float], float] | None:
    """((row, col) centroid, roundness) of the deepest, roundest pool core, or None without any."""
    depth_map = ndimage.distance_transform_edt(bright)
    pools, count = ndimage.label(bright)
    best, best_score = None, -1.0
    for pool_id in range(1, count + 1):
        pool = pools == pool_id
        depth = float(depth_map[pool].max())
        if not POOL_DEPTH_MM[0] <= depth * spacing_mm <= POOL_DEPTH_MM[1]:
            continue
        cores, n_cores = ndimage.label(pool & (depth_map > 0.5 * depth))
        for core_id in range(1, n_cores + 1):
            rows, cols = np.nonzero(cores == core_id)
            if len(rows) < 3:
                continue
            spread = np.linalg.eigvalsh(np.cov(np.stack([rows, cols])) + 1e-6 * np.eye(2))
            roundness = float(np.sqrt(spread[0] / spread[1]))
            score = float(depth_map[rows, cols].max()) * roundness ** 2
            if score > best_score:
                best, best_score = ((float(rows.mean()), float(cols.mean())), roundness), score
    return best
