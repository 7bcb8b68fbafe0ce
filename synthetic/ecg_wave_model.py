"""Parametric 12-lead ECG: a cardiac dipole built from Gaussian waves (ECGSYN-style P, Q, R, S, T per beat)
projected onto the lead vectors.

Each wave i adds  a_i * d_i * exp(-(t - t_beat - mu_i)^2 / (2 sigma_i^2))  to the 3D heart vector
(x: patient left, y: inferior, z: anterior). Limb leads follow Einthoven/Goldberger from leads I and II,
so III = II - I and aVR + aVL + aVF = 0 hold exactly; precordial leads project on horizontal-plane
vectors from V1 (anterior-right) to V6 (left).

How the latent state shows is `ecg_parameters` (graded and probabilistic: the ECG is a noisy, indirect
view, unlike the CMR). Per-subject nuisances: body habitus, a residual rotation, electrode placement, noise,
baseline wander, mains hum.
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


@dataclass(frozen=True)
class EcgParameters:
    """What a noise-free ECG of this subject shows: the ideal wave parameters (the ECG oracle reads these).
    Directions are unit 3-vectors in the body frame (x: patient left, y: inferior, z: anterior)."""
    heart_rate: float  # bpm
    qrs_ms: float
    voltage: float  # R-wave amplitude scale, mV
    axis_deg: float  # frontal QRS axis
    t_amp: float
    t_dir: tuple[float, float, float]
    infarct_q_amp: float  # 0 without pathological Q waves
    infarct_dir: tuple[float, float, float]
    r_prime_amp: float  # anterior R' (RV pressure load), 0 without
    st_amp: float  # diffuse ST elevation, 0 without
    p_amp: float

    def features(self) -> np.ndarray:
        """A flat vector for regression: directions enter scaled by their wave's amplitude."""
        axis = math.radians(self.axis_deg)
        return np.array([
            self.heart_rate, self.qrs_ms, self.voltage, math.cos(axis), math.sin(axis), self.t_amp,
            *(self.t_amp * np.asarray(self.t_dir)), self.infarct_q_amp,
            *(self.infarct_q_amp * np.asarray(self.infarct_dir)), self.r_prime_amp, self.st_amp, self.p_amp,
        ])


def ecg_parameters(state: CardiacState, rng: np.random.Generator) -> EcgParameters:
    """How the latent state shows on the ECG: every signature graded and probabilistic, none one-to-one.

    - voltage <- LV mass, damped by body habitus (large, unobserved) and effusion; lower when the LV fails;
    - axis <- heart orientation (also seen by CMR), RV load (right-axis deviation, graded), LVH;
    - R' <- RV load, in only some PH patients, graded;
    - pathological Q <- transmural infarct, more often the more severe the defect;
    - T vector <- away from the defect (ischaemia, not always expressed), strain in hypertrophy, flattening
      as EF falls; non-specific ST-T changes in some healthy subjects;
    - diffuse ST elevation <- acute pericarditis (a share of cases), early repolarisation in a few others;
    - rate and QRS width come from the state (sympathetic drive with EF, conduction disease, dilation).
    """
    ef_factor = float(np.clip(state.lvef / 60, 0.3, 1.2))
    habitus = math.exp(rng.normal(0, 0.3))
    damping = math.exp(-state.effusion_mm / 15) / habitus
    voltage = (state.lvm / 110) ** 0.6 * damping * (0.7 + 0.3 * ef_factor)
    rv_load = max(0.0, state.rvedv / state.lvedv - 1.0)
    axis = rng.normal(50, 12) + state.orientation_deg + 40 * rv_load * rng.uniform(0.2, 1.2)
    r_prime = 0.0
    if rv_load > 0.15 and rng.random() < min(0.5, rv_load):
        r_prime = 0.45 * rv_load * damping * rng.uniform(0.5, 1.5)

    t_angle = math.radians(axis - 10 + rng.normal(0, 10))
    t_dir = _unit([math.cos(t_angle), math.sin(t_angle), 0.35])
    t_amp = 0.30 * damping * (state.lvm / 110) ** 0.3 * (0.2 + 0.8 * ef_factor) * math.exp(rng.normal(0, 0.3))
    infarct_q, away = 0.0, np.zeros(3)
    if state.defect_width_deg > 0:
        body_angle = math.radians(state.defect_center_deg + state.orientation_deg)
        away = -_unit([math.cos(body_angle), 0.6 * math.sin(body_angle), math.sin(body_angle)])
        if rng.random() < 0.7 * state.defect_severity:  # transmural: pathological Q waves
            infarct_q = 0.35 * state.defect_severity * voltage * rng.uniform(0.5, 1.5)
        if rng.random() < 0.75:  # ischaemic T-wave change, of varying strength
            t_dir = _unit(t_dir + 1.4 * state.defect_severity * rng.uniform(0.3, 1.2) * away)
    if state.cm_type == "hypertrophic" and rng.random() < 0.3:  # strain pattern
        t_dir = _unit(t_dir - rng.uniform(0.6, 1.6) * _unit([math.cos(t_angle), math.sin(t_angle), 0.0]))
    if rng.random() < 0.12:  # non-specific ST-T changes, in anyone
        t_dir = _unit(t_dir + rng.uniform(0.3, 1.0) * _unit(rng.normal(0, 1, 3)))
    st = 0.0
    if state.diseases.get("pericarditis") and rng.random() < 0.35:  # acute phase: diffuse ST elevation
        st = 0.12 * rng.uniform(0.4, 1.5)
    elif rng.random() < 0.1:  # early repolarisation
        st = rng.uniform(0.03, 0.09)
    return EcgParameters(
        heart_rate=state.heart_rate, qrs_ms=state.qrs_ms, voltage=float(voltage), axis_deg=float(axis),
        t_amp=float(t_amp), t_dir=tuple(float(v) for v in t_dir), infarct_q_amp=float(infarct_q),
        infarct_dir=tuple(float(v) for v in away), r_prime_amp=float(r_prime), st_amp=float(st),
        p_amp=float(0.12 * damping * math.exp(rng.normal(0, 0.3))),
    )


def synthesize_ecg(state: CardiacState, fs: float, duration_s: float, rng: np.random.Generator,
                   noise: EcgNoise = EcgNoise(), params: EcgParameters | None = None) -> np.ndarray:
    """(12, fs*duration) float64 in mV, standard lead order. `params`: the subject's ideal wave parameters
    (drawn from `state` when not given)."""
    params = params or ecg_parameters(state, rng)
    n = int(round(fs * duration_s))
    t = np.arange(n) / fs
    waves = _waves(params)
    rotation = _rotation(rng, 6)  # anatomical variation the ideal parameters do not describe

    heart = np.zeros((3, n))
    rr = 60.0 / params.heart_rate
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


def _waves(p: EcgParameters):
    """(amplitude mV, direction, centre s relative to R, width s, stretches with RR) of each wave."""
    axis = math.radians(p.axis_deg)
    widen = p.qrs_ms / 90
    waves = [
        (p.p_amp, _unit([0.5, 0.8, 0.2]), -0.16, 0.022, False),  # P
        (0.10 * p.voltage, _unit([-0.6, 0.1, 0.8]), -0.028 * widen, 0.009 * widen, False),  # septal Q
        (1.15 * p.voltage, _unit([math.cos(axis), math.sin(axis), -0.35]), 0.0, 0.011 * widen, False),  # R
        (0.35 * p.voltage, _unit([-0.4, -0.3, -0.85]), 0.030 * widen, 0.011 * widen, False),  # S
    ]
    if p.r_prime_amp > 0:  # RV pressure load: anterior-rightward R' (tall R in V1)
        waves.append((p.r_prime_amp, _unit([-0.5, 0.3, 0.8]), 0.022 * widen, 0.012 * widen, False))
    if p.infarct_q_amp > 0:  # infarct zone: Q waves pointing away from the defect
        waves.append((p.infarct_q_amp, np.asarray(p.infarct_dir), -0.02 * widen, 0.012 * widen, False))
    waves.append((p.t_amp, np.asarray(p.t_dir), 0.26, 0.045, True))  # T
    if p.st_amp > 0:
        # Diffuse ST elevation: a plateau between QRS end and T built from broad Gaussians.
        st_dir = _unit([0.6, 0.7, 0.4])
        for centre in (0.08, 0.13, 0.18):
            waves.append((p.st_amp, st_dir, centre, 0.03, True))
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
