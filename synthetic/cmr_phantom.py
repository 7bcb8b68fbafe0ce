"""Short-axis bSSFP cine phantom whose geometry follows the subject's volume curve.

Per frame: LV blood pool (bright) inside an endocardial contour r(theta, t) that shortens by the
wall-motion map (a hypokinetic sector for CAD), myocardium out to an epicardium that keeps the
myocardial area (so the wall thickens in systole, except where it is hypokinetic), an RV crescent whose
area follows the RV volume curve, an effusion ring (bright fluid) with a dark pericardial line, all inside
a static torso with lungs and liver. Scanner effects: pixel size, intensity scale, bias field, Rician noise.
Indicators in the manifest are computed from the same geometry, so the images fully determine them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthetic.latent_state import CardiacState, defect_weight

SLICE_RADIUS_SCALE = (1.0, 0.93, 0.7)  # basal, mid, apical cavity radius relative to the reference


@dataclass(frozen=True)
class Scanner:
    matrix: int = 128  # rows = cols
    spacing_mm: float = 2.1
    frames: int = 20
    slices: int = 3
    slice_gap_mm: float = 10.0
    intensity_scale: float = 1500.0  # stored value of bright blood
    noise: float = 0.03  # Rician noise sd relative to blood
    bias: float = 0.25  # strength of the smooth receive-coil bias field


def contraction_curve(phase: np.ndarray) -> np.ndarray:
    """0 at end-diastole, 1 at end-systole (35 % of the cycle), back to 0 by 70 %, diastasis after."""
    return np.where(phase < 0.7, (1 - np.cos(2 * np.pi * phase / 0.7)) / 2, 0.0)


def render_cine(state: CardiacState, scanner: Scanner, rng: np.random.Generator,
                centre_mm: tuple[float, float] | None = None) -> np.ndarray:
    """(slices, frames, rows, cols) float32 stored values (before any DICOM/NIfTI scaling). The LV centre sits
    `centre_mm` (row, col) from the image centre; by default a random few mm."""
    n = scanner.matrix
    coords = ((np.arange(n) - n / 2 + 0.5) * scanner.spacing_mm).astype(np.float32)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # mm; rows go down, cols go right
    # LV near, not at, the image centre
    centre = (rng.normal(0, 6, 2) if centre_mm is None else np.asarray(centre_mm)).astype(np.float32)
    background = _torso(yy, xx, rng)
    bias = _bias_field(yy, xx, scanner.bias, rng)

    # Heart drawn inside a box around the LV only: everything else is static.
    half_box = int(math.ceil(80 / scanner.spacing_mm))
    cy, cx = (np.array(centre) / scanner.spacing_mm + n / 2).astype(int)
    r0, r1 = max(cy - half_box, 0), min(cy + half_box, n)
    c0, c1 = max(cx - half_box, 0), min(cx + half_box, n)
    dy, dx = yy[r0:r1, c0:c1] - centre[0], xx[r0:r1, c0:c1] - centre[1]
    rho = np.hypot(dy, dx)
    theta = np.degrees(np.arctan2(-dy, dx)) % 360  # image angle, counter-clockwise from +x
    weight = defect_weight(theta, state).astype(np.float32)
    shortening = state.contraction * (1 - state.defect_severity * weight)

    phase = np.arange(scanner.frames) / scanner.frames
    squeeze = contraction_curve(phase)
    edge = 0.6 * scanner.spacing_mm  # partial-volume blur of every boundary
    out = np.empty((scanner.slices, scanner.frames, n, n), dtype=np.float32)
    for s in range(scanner.slices):
        scale = SLICE_RADIUS_SCALE[s] if scanner.slices == 3 else 1.0
        r_ed = state.lv_radius_mm * scale
        outer_ed = r_ed + state.wall_mm
        for f in range(scanner.frames):
            r = r_ed * (1 - shortening * squeeze[f])  # endocardium per pixel angle
            outer = np.sqrt(r ** 2 + outer_ed ** 2 - r_ed ** 2)  # myocardial area preserved
            rv_fraction = 1 - (1 - state.rvesv / state.rvedv) * squeeze[f]
            heart = _heart_slice(dy, dx, rho, r, outer, state, scale, rv_fraction, edge)
            frame = background.copy()
            frame[r0:r1, c0:c1] = heart[1] * heart[0] + (1 - heart[1]) * frame[r0:r1, c0:c1]
            out[s, f] = frame
    out *= bias
    # float32 draws: half the cost of float64, and the cine is float32 anyway
    noise = lambda: rng.standard_normal(out.shape, dtype=np.float32) * np.float32(scanner.noise)  # noqa: E731
    noisy = np.hypot(out + noise(), noise())
    return (noisy * scanner.intensity_scale).astype(np.float32)


def _soft_inside(distance_inside: np.ndarray, edge: float) -> np.ndarray:
    return 1 / (1 + np.exp(-distance_inside / np.float32(edge)))


def _heart_slice(dy, dx, rho, r, outer, state: CardiacState, scale, rv_fraction, edge):
    """(intensity, opacity) of the heart and pericardium inside the box."""
    lv_blood = _soft_inside(r - rho, edge)
    lv_myo = _soft_inside(outer - rho, edge) - lv_blood
    # RV: an ellipse to the image left of the LV (patient right/anterior), the LV carved out of it.
    rv_ed_area = (state.rvedv / state.lvedv) * math.pi * (state.lv_radius_mm * scale) ** 2 * 0.9
    rv_area = rv_ed_area * rv_fraction
    a = 1.5 * math.sqrt(rv_area / math.pi)  # semi-axes with ratio 1.5 : 1/1.5
    b = math.sqrt(rv_area / math.pi) / 1.5
    offset = float(np.max(outer)) + 0.55 * a
    ex, ey = (dx + offset) / a, (dy + 0.15 * offset) / b
    rv_extent = (1 - np.hypot(ex, ey)) * min(a, b)  # ≈ distance inside the RV ellipse
    outside_lv = _soft_inside(rho - outer - 1.5, edge)
    rv_blood = _soft_inside(rv_extent, edge) * outside_lv
    rv_wall = (_soft_inside(rv_extent + 3.0, edge) * outside_lv) - rv_blood
    heart_edge = np.maximum(outer - rho, rv_extent + 3.0)  # ≈ distance inside the heart outline
    effusion = _soft_inside(heart_edge + state.effusion_mm, edge) - _soft_inside(heart_edge, edge)
    pericardium = _soft_inside(heart_edge + state.effusion_mm + 1.5, edge) - _soft_inside(heart_edge + state.effusion_mm, edge)
    fat = _soft_inside(heart_edge + state.effusion_mm + 4.0, edge) - _soft_inside(heart_edge + state.effusion_mm + 1.5, edge)

    intensity = 1.0 * lv_blood + 0.28 * lv_myo + 0.95 * rv_blood + 0.3 * rv_wall + 0.85 * effusion + 0.12 * pericardium + 0.7 * fat
    opacity = np.clip(lv_blood + lv_myo + rv_blood + rv_wall + effusion + pericardium + fat, 0, 1)
    intensity = np.divide(intensity, opacity, out=np.zeros_like(intensity), where=opacity > 1e-6)
    return intensity, opacity


def _torso(yy, xx, rng) -> np.ndarray:
    """Static chest: soft tissue inside an elliptical body, dark lungs either side, liver below."""
    w, h = rng.uniform(150, 175), rng.uniform(110, 130)
    body = _soft_inside((1 - np.hypot(xx / w, (yy - 5) / h)) * 40, 2.0)
    lungs = sum(_soft_inside((1 - np.hypot((xx - side * 75) / 45, (yy + 10) / 70)) * 25, 2.0) for side in (-1, 1))
    liver = _soft_inside((1 - np.hypot((xx + 50) / 60, (yy - 85) / 35)) * 25, 2.0)
    image = 0.32 * body
    image = image * (1 - np.clip(lungs, 0, 1)) + 0.04 * np.clip(lungs, 0, 1) * body
    return image * (1 - liver) + 0.45 * liver * body


def _bias_field(yy, xx, strength: float, rng) -> np.ndarray:
    span = np.abs(xx).max()
    gx, gy, gxy = rng.normal(0, 1, 3)
    field = gx * xx / span + gy * yy / span + 0.5 * gxy * (xx * yy) / span ** 2
    return (1 + strength * field / max(1e-6, np.abs(field).max())).astype(np.float32)
