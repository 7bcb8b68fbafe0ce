"""SecAgg+ for the training rounds. In flwr 1.41 it exists only in the legacy workflow API, so this module
is the one place that builds it: `DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(...))`, run with a
`LegacyContext`. Settings come from the study config's [secagg] table.

Honest note: Flower's SecAgg+ derives the masks from a shared secret folded to a 32-bit seed of NumPy's
Mersenne Twister (`secaggplus_utils.pseudo_rand_gen`), which is not a cryptographic PRG; the protocol hides
individual updates from an honest-but-curious server under that caveat.
"""

from __future__ import annotations

from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from server.study_config import SecAggSettings


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
