"""SecAgg+ for the training rounds. In flwr 1.41 it exists only in the legacy workflow API, so this module
is the one place that builds it: `DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`, run with a
`LegacyContext`. Settings come from the study config's [secagg] table.

Flower's own mask generator folds the shared secret to a 32-bit Mersenne Twister seed; both ends here use
ChaCha20 instead (`shared_models.mask_prg`, installed on the workflow module below and on the client mod in
client/client_app.py).
"""

from __future__ import annotations

import importlib

from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from server.study_config import SecAggSettings
from shared_models import mask_prg

mask_prg.install(importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow"))


def fit_workflow(settings: SecAggSettings) -> SecAggPlusWorkflow | None:
    if not settings.enabled:
        return None
    return SecAggPlusWorkflow(
        num_shares=float(settings.num_shares), reconstruction_threshold=float(settings.reconstruction_threshold),
        max_weight=1.0,  # sites send weight 1; their arrays carry the per-part example weights
        clipping_range=settings.clipping_range, quantization_range=settings.quantization_range,
        modulus_range=2 ** 32, timeout=settings.timeout_s,
    )


def phase_workflow(settings: SecAggSettings) -> DefaultWorkflow:
    return DefaultWorkflow(fit_workflow=fit_workflow(settings))
