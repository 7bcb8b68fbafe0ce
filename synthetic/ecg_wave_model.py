"""Parametric 12-lead ECG: a cardiac dipole built from Gaussian waves (ECGSYN-style P, Q, R, S, T per beat)
projected onto the lead vectors.

Each wave i adds  a_i * d_i * exp(-(t - t_beat - mu_i)^2 / (2 sigma_i^2))  to the 3D heart vector
(x: patient left, y: inferior, z: anterior). Limb leads follow Einthoven/Goldberger from leads I and II,
so III = II - I and aVR + aVL + aVF = 0 hold exactly; precordial leads project on horizontal-plane
vectors from V1 (anterior-right) to V6 (left).

How the latent state shows (and only partly: the ECG is a noisy, indirect view, unlike the CMR):
QRS voltage <- LV mass, damped by body habitus and effusion; QRS width <- conduction (DCM/HCM);
frontal axis <- RV load (PH turns it right and adds an anterior R in V1); CAD <- Q waves and inverted T
pointing away from the defect; pericarditis <- diffuse ST elevation and low voltage; rate <- heart rate.
Per-subject nuisances: heart orientation, electrode placement, noise, baseline wander, mains hum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthetic.latent_state import CardiacState

# Standard precordial electrode directions in the horizontal plane (degrees from patient left towards anterior).
_PRECORDIAL_DEG = {"V1": 115, "V2": 95, "V3": 75, "V4": 55, "V5": 30, "V6": 5}
LEAD_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass(frozen=True)
class EcgNoise:
    emg_mv: float = 0.015  # broadband muscle noise
    wander_mv: float = 0.15  # respiratory baseline wander
    mains_hz: float = 50.0
    mains_mv: float = 0.02


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _rotation(rng: np.random.Generator, sd_deg: float) -> np.ndarray:
    """Small random rotation: anatomical variation of the heart's position in the chest."""
    ax, ay, az = np.deg2rad(rng.normal(0, sd_deg, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def synthesize_ecg(state: CardiacState, fs: float, duration_s: float, rng: np.random.Generator,
                   noise: EcgNoise = EcgNoise()) -> np.ndarray:
    """(12, fs*duration) float64 in mV, standard lead order."""
    n = int(round(fs * duration_s))
    t = np.arange(n) / fs
    waves = _waves(state, rng)
    rotation = _rotation(rng, 12)

    heart = np.zeros((3, n))
    rr = 60.0 / state.heart_rate
    beat = rng.uniform(0.1, 0.6) * rr
    breathing_hz = rng.uniform(0.2, 0.33)
    while beat < duration_s + 0.5:
        qt_scale = math.sqrt(rr)  # Bazett: repolarisation timing stretches with the RR interval
        for amplitude, direction, mu, sigma, scales_with_rr in waves:
            centre = beat + (mu * qt_scale if scales_with_rr else mu)
            lo, hi = np.searchsorted(t, [centre - 5 * sigma, centre + 5 * sigma])
            if hi > lo:
                heart[:, lo:hi] += amplitude * np.outer(direction, np.exp(-((t[lo:hi] - centre) ** 2) / (2 * sigma ** 2)))
        # respiratory sinus arrhythmia plus beat-to-beat jitter
        rr_now = rr * (1 + 0.04 * math.sin(2 * math.pi * breathing_hz * beat) + rng.normal(0, 0.01))
        beat += rr_now
    heart = rotation @ heart

    lead_i, lead_ii = heart[0], heart[0] * 0.5 + heart[1] * math.sqrt(3) / 2
    limb = [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    precordial = []
    for name in LEAD_ORDER[6:]:
        angle = math.radians(_PRECORDIAL_DEG[name] + rng.normal(0, 6))  # electrode placement varies
        vector = _unit([math.cos(angle), 0.15, math.sin(angle)])
        precordial.append(1.6 * vector @ heart)  # chest leads sit closer to the heart
    ecg = np.stack(limb + precordial)
    return ecg + _noise(ecg.shape, fs, t, rng, noise)


def _waves(state: CardiacState, rng: np.random.Generator):
    """(amplitude mV, direction, centre s relative to R, width s, stretches with RR) of each wave."""
    habitus = math.exp(rng.normal(0, 0.25))  # chest wall / lung attenuation: large, unobserved
    damping = math.exp(-state.effusion_mm / 9) / habitus
    voltage = (state.lvm / 110) ** 0.8 * damping
    rv_load = max(0.0, state.rvedv / state.lvedv - 1.0)
    axis = math.radians(rng.normal(50, 18) + 70 * rv_load - 15 * (state.lvm > 180))
    widen = state.qrs_ms / 90

    r_dir = _unit([math.cos(axis), math.sin(axis), -0.35])
    waves = [
        (0.12 * damping, _unit([0.5, 0.8, 0.2]), -0.16, 0.022, False),  # P
        (0.10 * voltage, _unit([-0.6, 0.1, 0.8]), -0.028 * widen, 0.009 * widen, False),  # septal Q
        (1.15 * voltage, r_dir, 0.0, 0.011 * widen, False),  # R
        (0.35 * voltage, _unit([-0.4, -0.3, -0.85]), 0.030 * widen, 0.011 * widen, False),  # S
    ]
    t_dir = _unit([math.cos(axis), math.sin(axis), 0.35])
    t_amp = 0.30 * damping * (state.lvm / 110) ** 0.3
    if rv_load > 0.2:  # RV pressure load: anterior-rightward R' (tall R in V1)
        waves.append((0.45 * rv_load * damping, _unit([-0.5, 0.3, 0.8]), 0.022 * widen, 0.012 * widen, False))
    if state.defect_width_deg > 0:
        # Infarct zone: Q waves and T vector pointing away from the defect (its position in the chest).
        angle = math.radians(state.defect_center_deg)
        away = -_unit([math.cos(angle), 0.6 * math.sin(angle), math.sin(angle)])
        waves.append((0.35 * state.defect_severity * voltage, away, -0.02 * widen, 0.012 * widen, False))
        t_dir = _unit(t_dir + 1.4 * state.defect_severity * away)
    waves.append((t_amp, t_dir, 0.26, 0.045, True))  # T
    if state.effusion_mm > 0:
        # Pericarditis: diffuse ST elevation, a plateau between QRS end and T built from broad Gaussians.
        st_dir = _unit([0.6, 0.7, 0.4])
        for centre in (0.08, 0.13, 0.18):
            waves.append((0.12 * math.exp(-state.effusion_mm / 30), st_dir, centre, 0.03, True))
    return waves


def _noise(shape, fs: float, t: np.ndarray, rng: np.random.Generator, noise: EcgNoise) -> np.ndarray:
    leads, n = shape
    emg = rng.normal(0, noise.emg_mv, shape)
    wander = np.zeros(shape)
    for _ in range(3):
        freq = rng.uniform(0.05, 0.45)
        phase = rng.uniform(0, 2 * math.pi, (leads, 1))
        wander += rng.uniform(0.3, 1.0) * noise.wander_mv * np.sin(2 * math.pi * freq * t + phase)
    mains = noise.mains_mv * np.sin(2 * math.pi * noise.mains_hz * t + rng.uniform(0, 2 * math.pi, (leads, 1)))
    return emg + wander + (mains if noise.mains_hz < fs / 2 else 0)
