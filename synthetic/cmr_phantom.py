"""Short-axis bSSFP cine phantom whose geometry follows the subject's volume curve.

Per frame: LV blood pool (bright) inside an endocardial contour r(theta, t) that shortens by the
wall-motion map (a hypokinetic sector for CAD), myocardium out to an epicardium that keeps the
myocardial area (so the wall thickens in systole, except where it is hypokinetic), an RV crescent whose
area follows the RV volume curve, an effusion ring (bright fluid) with a dark pericardial line, all inside
a static torso with lungs and liver. The heart is turned in-plane by the subject's orientation (the same
variable turns the ECG's axis). Scanner effects: pixel size, vendor contrast, intensity scale, bias field,
Rician noise. Indicators in the manifest are computed from the same geometry, so the images fully determine them.

What is not the heart is drawn apart (`CmrNuisance`: where the heart sits, the torso, the coil's bias field),
so that the cohort oracles can re-render a subject with any part of it held at its average.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from synthetic.latent_state import CardiacState, defect_weight

SLICE_RADIUS_SCALE = (1.0, 0.93, 0.7)  # basal, mid, apical cavity radius relative to the reference
POSITION_SD_MM = 8.0  # where the LV sits in the field of view, per axis (ingest finds it: sitedata/heart_localisation)


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
    myocardium: float = 0.28  # vendor contrast: myocardium relative to blood
    tissue: float = 1.0  # vendor contrast: chest soft tissue relative to the reference


@dataclass(frozen=True)
class CmrNuisance:
    """Everything in a cine that is not the heart, drawn once per subject."""
    centre_mm: tuple[float, float] = (0.0, 0.0)  # LV centre from the image centre (row, col)
    torso_mm: tuple[float, float] = (162.5, 120.0)  # body half-width and half-height
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)  # coil field: x, y and xy gradients

    @classmethod
    def sample(cls, rng: np.random.Generator, position_sd_mm: float = POSITION_SD_MM) -> "CmrNuisance":
        centre = rng.normal(0, position_sd_mm, 2)
        torso = (rng.uniform(150, 175), rng.uniform(110, 130))
        return cls(tuple(float(v) for v in centre), tuple(float(v) for v in torso),
                   tuple(float(v) for v in rng.normal(0, 1, 3)))


def contraction_curve(phase: np.ndarray) -> np.ndarray:
    """0 at end-diastole, 1 at end-systole (35 % of the cycle), back to 0 by 70 %, diastasis after."""
    return np.where(phase < 0.7, (1 - np.cos(2 * np.pi * phase / 0.7)) / 2, 0.0)


def render_cine(state: CardiacState, scanner: Scanner, rng: np.random.Generator | None,
                centre_mm: tuple[float, float] | None = None, nuisance: CmrNuisance | None = None) -> np.ndarray:
    """(slices, frames, rows, cols) float32 stored values (before any DICOM/NIfTI scaling).

    `nuisance` places the heart and draws the torso and coil (drawn from `rng` when not given; `centre_mm`
    overrides its LV centre). With `rng` None the cine is noise-free."""
    if nuisance is None:
        nuisance = CmrNuisance.sample(rng)
    if centre_mm is not None:
        nuisance = dataclasses.replace(nuisance, centre_mm=tuple(float(v) for v in centre_mm))
    n = scanner.matrix
    coords = ((np.arange(n) - n / 2 + 0.5) * scanner.spacing_mm).astype(np.float32)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # mm; rows go down, cols go right
    centre = np.asarray(nuisance.centre_mm, dtype=np.float32)
    background = scanner.tissue * _torso(yy, xx, nuisance.torso_mm)
    bias = _bias_field(yy, xx, scanner.bias, nuisance.bias)

    # Heart drawn inside a box around the LV only: everything else is static.
    half_box = int(math.ceil(80 / scanner.spacing_mm))
    cy, cx = (np.array(centre) / scanner.spacing_mm + n / 2).astype(int)
    r0, r1 = max(cy - half_box, 0), min(cy + half_box, n)
    c0, c1 = max(cx - half_box, 0), min(cx + half_box, n)
    # The heart's own frame: image offsets from the LV centre turned by the subject's orientation.
    turn = math.radians(state.orientation_deg)
    oy, ox = yy[r0:r1, c0:c1] - centre[0], xx[r0:r1, c0:c1] - centre[1]
    dy = np.float32(math.cos(turn)) * oy - np.float32(math.sin(turn)) * ox
    dx = np.float32(math.sin(turn)) * oy + np.float32(math.cos(turn)) * ox
    rho = np.hypot(dy, dx)
    theta = np.degrees(np.arctan2(-dy, dx)) % 360  # angle in the heart's frame, counter-clockwise from +x
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
            heart = _heart_slice(dy, dx, rho, r, outer, state, scale, rv_fraction, edge, scanner.myocardium)
            frame = background.copy()
            frame[r0:r1, c0:c1] = heart[1] * heart[0] + (1 - heart[1]) * frame[r0:r1, c0:c1]
            out[s, f] = frame
    out *= bias
    if rng is not None:
        # float32 draws: half the cost of float64, and the cine is float32 anyway
        noise = lambda: rng.standard_normal(out.shape, dtype=np.float32) * np.float32(scanner.noise)  # noqa: E731
        out = np.hypot(out + noise(), noise())
    return (out * scanner.intensity_scale).astype(np.float32)


def _soft_inside(distance_inside: np.ndarray, edge: float) -> np.ndarray:
    # the logistic as tanh: no overflow far outside, and faster than exp or scipy's expit on float32
    return 0.5 + 0.5 * np.tanh(distance_inside * np.float32(0.5 / edge))


def _heart_slice(dy, dx, rho, r, outer, state: CardiacState, scale, rv_fraction, edge, myocardium):
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

    intensity = 1.0 * lv_blood + myocardium * lv_myo + 0.95 * rv_blood + (myocardium + 0.02) * rv_wall + 0.85 * effusion + 0.12 * pericardium + 0.7 * fat
    opacity = np.clip(lv_blood + lv_myo + rv_blood + rv_wall + effusion + pericardium + fat, 0, 1)
    intensity = np.divide(intensity, opacity, out=np.zeros_like(intensity), where=opacity > 1e-6)
    return intensity, opacity


def _torso(yy, xx, size_mm: tuple[float, float]) -> np.ndarray:
    """Static chest: soft tissue inside an elliptical body, dark lungs either side, liver below."""
    w, h = size_mm
    body = _soft_inside((1 - np.hypot(xx / w, (yy - 5) / h)) * 40, 2.0)
    lungs = sum(_soft_inside((1 - np.hypot((xx - side * 75) / 45, (yy + 10) / 70)) * 25, 2.0) for side in (-1, 1))
    liver = _soft_inside((1 - np.hypot((xx + 50) / 60, (yy - 85) / 35)) * 25, 2.0)
    image = 0.32 * body
    image = image * (1 - np.clip(lungs, 0, 1)) + 0.04 * np.clip(lungs, 0, 1) * body
    return image * (1 - liver) + 0.45 * liver * body


def _bias_field(yy, xx, strength: float, gradients: tuple[float, float, float]) -> np.ndarray:
    span = np.abs(xx).max()
    gx, gy, gxy = gradients
    field = gx * xx / span + gy * yy / span + 0.5 * gxy * (xx * yy) / span ** 2
    return (1 + strength * field / max(1e-6, np.abs(field).max())).astype(np.float32)
