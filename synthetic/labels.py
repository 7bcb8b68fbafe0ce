"""How a site records a subject's true disease status: its label definition.

Real sites do not label alike. A hospital that adjudicates diagnoses against the CMR misses few; a clinical ECG
archive's labels are billing codes (ICD-like): a share of true cases is never coded, and a few people carry a
code they do not have. The miss and false-code rates below are those the test-bed claims, reported with the
cohort oracles; the true status stays in the ground-truth file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelDefinition:
    name: str
    missed: float  # share of true cases recorded as negative
    false_code: float  # share of true negatives recorded as positive


CMR_ADJUDICATED = LabelDefinition("cmr-adjudicated", missed=0.03, false_code=0.01)
ICD_CODED = LabelDefinition("icd-coded", missed=0.15, false_code=0.03)
DEFINITIONS = {d.name: d for d in (CMR_ADJUDICATED, ICD_CODED)}


def record_labels(truth: dict[str, int], definition: LabelDefinition, rng: np.random.Generator) -> dict[str, int]:
    """The labels this site writes in its manifest for a subject whose true status is `truth`."""
    recorded = {}
    for disease, positive in truth.items():
        flip = rng.random() < (definition.missed if positive else definition.false_code)
        recorded[disease] = int(positive) ^ int(flip)
    return recorded
