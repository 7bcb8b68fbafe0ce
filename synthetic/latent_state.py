"""Latent cardiac state of a synthetic subject and the disease labels tied to it.

Disease processes are drawn first (site-dependent prevalence, age/sex effects), each with a graded severity,
then geometry follows from them, then the true status: heart failure <- low EF (or a stiff, hypertrophied LV
with preserved EF), cardiomyopathy <- dilated or thickened LV, pulmonary hypertension <- enlarged, failing RV,
pericarditis <- effusion (in most), CAD <- regional wall-motion defect (in most). How a site records that
status (its label definition, its label noise) is `synthetic/labels.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LONG_AXIS_RATIO = 3.5  # LV modelled as a half prolate ellipsoid, long axis = 3.5 x mid-cavity radius
MYOCARDIAL_DENSITY = 1.05  # g/mL


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
    orientation_deg: float  # in-plane rotation of the heart: turns the ECG's axis and the CMR's RV and defect alike
    diastolic_dysfunction: float  # stiffness (age, hypertrophy): heart failure with preserved EF
    diseases: dict[str, int]  # true status; what a site records depends on its label definition

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
    """One subject: disease processes first (prevalence shifted by age and sex), each with a graded severity,
    then the geometry they produce, then the true disease status (which a site's label definition then
    records imperfectly, see `labels.py`)."""
    age = float(np.clip(rng.normal(age_mean, 14), 18, 92))
    sex = int(rng.random() < 0.5)
    age_effect = 0.04 * (age - 60)

    cad = rng.random() < _shift(prevalence.cad, age_effect + 0.5 * sex)
    cm_type = "none"
    if rng.random() < prevalence.cardiomyopathy:
        cm_type = "dilated" if rng.random() < 0.6 else "hypertrophic"
    pericarditis = rng.random() < prevalence.pericarditis
    ph = rng.random() < _shift(prevalence.pulmonary_hypertension, 0.02 * (age - 60))

    size = math.exp(rng.normal(0, 0.12))
    lvedv = (150 if sex else 120) * size
    lvm = (125 if sex else 95) * size * math.exp(rng.normal(0, 0.12) + 0.004 * (age - 60))
    ef_target = rng.normal(62, 6)
    if cm_type == "dilated":
        lvedv *= rng.uniform(1.25, 1.9)
        lvm *= 1.3
        ef_target = rng.normal(38, 11)
    elif cm_type == "hypertrophic":
        lvedv *= 0.85
        lvm *= rng.uniform(1.3, 2.0)
        ef_target = rng.normal(67, 6)
    defect_width = defect_severity = 0.0
    defect_center = float(rng.uniform(0, 360))
    if cad:
        if rng.random() < 0.8:  # most CAD patients here have a regional wall-motion defect, of graded severity
            defect_width = float(rng.uniform(40, 130))
            defect_severity = float(rng.uniform(0.25, 1.0))
            ef_target -= 10 * defect_severity * rng.uniform(0, 1.5)  # global remodelling beyond the sector
        if rng.random() < 0.3:
            lvedv *= rng.uniform(1.05, 1.3)  # post-infarct remodelling
    ef_target = float(np.clip(ef_target, 15, 80))
    contraction = 1 - math.sqrt(1 - ef_target / 100)

    rvedv = lvedv * rng.normal(1.05, 0.08)
    rvef = rng.normal(58, 5)
    if ph:
        severity = rng.uniform(0.2, 1.0)
        rvedv *= 1 + 0.9 * severity
        rvef = rng.normal(58 - 25 * severity, 6)
    rvef = float(np.clip(rvef, 15, 75))
    # Pericarditis: an effusion in most, never in all; a small physiological rim in a few others.
    effusion_mm = float(2 + rng.gamma(1.5, 2.5)) if pericarditis and rng.random() < 0.9 else 0.0
    if not pericarditis and rng.random() < 0.03:
        effusion_mm = float(rng.uniform(1, 2))
    # Conduction: QRS widens with LV dilation; LBBB in a third of DCM, now and then in anyone.
    qrs = rng.normal(92 if sex else 86, 8) + 10 * max(0.0, lvedv / (150 if sex else 120) - 1)
    if rng.random() < (0.25 if cm_type == "dilated" else 0.03):
        qrs += rng.uniform(25, 60)
    if cm_type == "hypertrophic":
        qrs += 5
    # Sympathetic drive rises as the pump fails: heart rate graded with EF, not a step.
    heart_rate = float(np.clip(rng.normal(68, 10) + 0.6 * max(0.0, 58 - ef_target)
                               + (5 if effusion_mm > 3 else 0), 45, 125))

    state = CardiacState(
        age=age, sex=sex, heart_rate=heart_rate, lvedv=float(lvedv), lvm=float(lvm), contraction=float(contraction),
        defect_center_deg=defect_center, defect_width_deg=defect_width, defect_severity=defect_severity,
        rvedv=float(rvedv), rvesv=float(rvedv * (1 - rvef / 100)), effusion_mm=effusion_mm, cm_type=cm_type,
        qrs_ms=float(np.clip(qrs, 70, 180)), orientation_deg=float(rng.normal(0, 15)),
        diastolic_dysfunction=float(rng.normal(0, 1) + 0.04 * (age - 60) + 2.0 * (lvm / (lvedv * 0.8) - 1)),
        diseases={},
    )
    # Heart failure: reduced EF (steeply more likely below 42 %) or, with preserved EF, a stiff hypertrophied LV.
    p_hfref = 1 / (1 + math.exp((state.lvef - 42) / 4))
    p_hfpef = 0.5 / (1 + math.exp(-(state.diastolic_dysfunction - 2.0) * 2))
    heart_failure = rng.random() < p_hfref + (1 - p_hfref) * p_hfpef
    state.diseases = {
        "CAD": int(cad),
        "cardiomyopathy": int(cm_type != "none"),
        "pericarditis": int(pericarditis),
        "heart_failure": int(heart_failure),
        "pulmonary_hypertension": int(ph),
    }
    return state


def _shift(probability: float, logit_shift: float) -> float:
    logit = math.log(probability / (1 - probability)) + logit_shift
    return 1 / (1 + math.exp(-logit))
