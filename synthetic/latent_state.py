"""Latent cardiac state of a synthetic subject and the disease labels tied to it.

Disease processes are drawn first (site-dependent prevalence, age/sex effects), then geometry follows
from them, then the labels are read off the geometry with a little label noise:
heart failure <- low EF, cardiomyopathy <- dilated or thickened LV, pulmonary hypertension <- enlarged,
failing RV, pericarditis <- effusion, CAD <- regional wall-motion defect (most of the time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LONG_AXIS_RATIO = 3.5  # LV modelled as a half prolate ellipsoid, long axis = 3.5 x mid-cavity radius
MYOCARDIAL_DENSITY = 1.05  # g/mL
LABEL_NOISE = 0.02  # fraction of disease labels flipped, as in real registries


@dataclass(frozen=True)
class Prevalence:
    cad: float
    cardiomyopathy: float
    pericarditis: float
    pulmonary_hypertension: float


@dataclass
class CardiacState:
    age: float
    sex: int  # 1 male, 0 female
    heart_rate: float  # bpm
    lvedv: float  # mL
    lvm: float  # g
    contraction: float  # fractional radius shortening of normal myocardium, ED -> ES
    defect_center_deg: float  # centre of the hypokinetic sector (CAD), angle in the short-axis image
    defect_width_deg: float  # 0 when there is no defect
    defect_severity: float  # fraction of contraction lost inside the sector
    rvedv: float
    rvesv: float
    effusion_mm: float  # pericardial effusion thickness
    cm_type: str  # none | dilated | hypertrophic
    qrs_ms: float
    diseases: dict[str, int]

    # derived indicators --------------------------------------------------------------------------
    def shortening(self, n_angles: int = 360) -> np.ndarray:
        """Fractional radius shortening at ES per angle (the wall-motion map)."""
        angles = np.linspace(0, 360, n_angles, endpoint=False)
        return self.contraction * (1 - self.defect_severity * defect_weight(angles, self))

    @property
    def lvesv(self) -> float:
        # Volume scales with cavity area in the short-axis plane: V_es = V_ed * mean((1 - c)^2).
        return self.lvedv * float(np.mean((1 - self.shortening()) ** 2))

    @property
    def lvsv(self) -> float:
        return self.lvedv - self.lvesv

    @property
    def lvef(self) -> float:
        return 100 * self.lvsv / self.lvedv

    @property
    def rvsv(self) -> float:
        return self.rvedv - self.rvesv

    @property
    def rvef(self) -> float:
        return 100 * self.rvsv / self.rvedv

    @property
    def lv_radius_mm(self) -> float:
        """End-diastolic mid-cavity radius."""
        return (3 * self.lvedv * 1000 / (2 * math.pi * LONG_AXIS_RATIO)) ** (1 / 3)

    @property
    def wall_mm(self) -> float:
        """End-diastolic wall thickness that holds the myocardial mass on the same ellipsoid shape."""
        r = self.lv_radius_mm
        myocardium_mm3 = self.lvm / MYOCARDIAL_DENSITY * 1000
        outer = (r ** 3 + 3 * myocardium_mm3 / (2 * math.pi * LONG_AXIS_RATIO)) ** (1 / 3)
        return outer - r

    def indicators(self) -> dict[str, float]:
        return {
            "LVEDV": self.lvedv, "LVESV": self.lvesv, "LVSV": self.lvsv, "LVEF": self.lvef, "LVM": self.lvm,
            "RVEDV": self.rvedv, "RVESV": self.rvesv, "RVSV": self.rvsv, "RVEF": self.rvef,
        }


def defect_weight(angles_deg: np.ndarray, state: CardiacState) -> np.ndarray:
    """1 inside the hypokinetic sector, fading smoothly to 0 outside it."""
    if state.defect_width_deg <= 0:
        return np.zeros_like(angles_deg, dtype=float)
    distance = np.abs((angles_deg - state.defect_center_deg + 180) % 360 - 180)
    half = state.defect_width_deg / 2
    return np.clip((half + 15 - distance) / 15, 0, 1)


def sample_state(rng: np.random.Generator, prevalence: Prevalence, age_mean: float) -> CardiacState:
    age = float(np.clip(rng.normal(age_mean, 14), 18, 92))
    sex = int(rng.random() < 0.5)
    age_effect = 0.04 * (age - 60)

    cad = rng.random() < _shift(prevalence.cad, age_effect + 0.5 * sex)
    cm_type = "none"
    if rng.random() < prevalence.cardiomyopathy:
        cm_type = "dilated" if rng.random() < 0.6 else "hypertrophic"
    effusion = rng.random() < prevalence.pericarditis
    ph = rng.random() < _shift(prevalence.pulmonary_hypertension, 0.02 * (age - 60))

    size = math.exp(rng.normal(0, 0.12))
    lvedv = (150 if sex else 120) * size
    lvm = (125 if sex else 95) * size * math.exp(rng.normal(0, 0.1))
    ef_target = rng.normal(62, 5)
    qrs = rng.normal(92 if sex else 86, 8)
    if cm_type == "dilated":
        lvedv *= rng.uniform(1.4, 1.9)
        lvm *= 1.3
        ef_target = rng.normal(33, 8)
        qrs += rng.uniform(20, 60)  # conduction disease (LBBB-like) is common in DCM
    elif cm_type == "hypertrophic":
        lvedv *= 0.85
        lvm *= rng.uniform(1.5, 2.2)
        ef_target = rng.normal(68, 5)
        qrs += 10
    defect_width = defect_severity = 0.0
    defect_center = float(rng.uniform(0, 360))
    if cad:
        if rng.random() < 0.85:  # most CAD patients here have a regional wall-motion defect
            defect_width = float(rng.uniform(60, 130))
            defect_severity = float(rng.uniform(0.5, 1.0))
        if rng.random() < 0.3:
            lvedv *= rng.uniform(1.05, 1.3)  # post-infarct remodelling
    ef_target = float(np.clip(ef_target, 15, 80))
    contraction = 1 - math.sqrt(1 - ef_target / 100)

    rvedv = lvedv * rng.normal(1.05, 0.08)
    rvef = rng.normal(58, 5)
    if ph:
        rvedv *= rng.uniform(1.4, 2.0)
        rvef = rng.normal(36, 7)
    rvef = float(np.clip(rvef, 15, 75))
    effusion_mm = float(rng.uniform(4, 14)) if effusion else 0.0
    heart_rate = float(np.clip(rng.normal(68, 10) + (12 if ef_target < 40 else 0) + (8 if effusion else 0), 45, 125))

    state = CardiacState(
        age=age, sex=sex, heart_rate=heart_rate, lvedv=float(lvedv), lvm=float(lvm), contraction=float(contraction),
        defect_center_deg=defect_center, defect_width_deg=defect_width, defect_severity=defect_severity,
        rvedv=float(rvedv), rvesv=float(rvedv * (1 - rvef / 100)), effusion_mm=effusion_mm, cm_type=cm_type,
        qrs_ms=float(np.clip(qrs, 70, 180)), diseases={},
    )
    heart_failure = rng.random() < 1 / (1 + math.exp((state.lvef - 42) / 4))  # steeply more likely below EF 42 %
    truth = {
        "CAD": cad,
        "cardiomyopathy": cm_type != "none",
        "pericarditis": effusion,
        "heart_failure": heart_failure,
        "pulmonary_hypertension": ph,
    }
    state.diseases = {name: int(value ^ (rng.random() < LABEL_NOISE)) for name, value in truth.items()}
    return state


def _shift(probability: float, logit_shift: float) -> float:
    logit = math.log(probability / (1 - probability)) + logit_shift
    return 1 / (1 + math.exp(-logit))
