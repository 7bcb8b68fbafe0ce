"""SecAgg+ for the training rounds. In flwr 1.41 it exists only in the legacy workflow API, so this module
is the one place that builds it, as the fit step of the study runner's `DefaultWorkflow` (server/study_run.py),
run with a `LegacyContext`. Settings come from the study config's [secagg] table.

Flower's own mask generator folds the shared secret to a 32-bit Mersenne Twister seed; both ends here use
ChaCha20 instead (`protocol.mask_prg`, installed on the workflow module below and on the client mod in
client/client_app.py).

Dropouts: Flower 1.41's workflow counts a site that dropped before its key shares were sent (in the setup or
share-keys stage) as a dead site whose masks must be removed in the unmask stage. Nobody holds shares of it and
nobody masked with it, so the round failed (the server found too few shares, or a client's mod raised KeyError
looking for them). `DropoutTolerantSecAggPlus` forgets such sites once key sharing ends: they are simply not
part of the round, as the SecAgg+ protocol intends.
"""

from __future__ import annotations

import importlib

from flwr.server.workflow import SecAggPlusWorkflow

from server.study_config import SecAggSettings
from protocol import mask_prg

mask_prg.install(importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow"))


class DropoutTolerantSecAggPlus(SecAggPlusWorkflow):
    def share_keys_stage(self, grid, context, state) -> bool:
        proceed = super().share_keys_stage(grid, context, state)
        # Only sites whose shares went out take part from here on; the others masked nothing and left nothing.
        keyed = set(state.active_node_ids)
        state.sampled_node_ids = set(keyed)
        state.nid_to_neighbours = {nid: neighbours & keyed for nid, neighbours in state.nid_to_neighbours.items()
                                   if nid in keyed}
        return proceed


def fit_workflow(settings: SecAggSettings) -> SecAggPlusWorkflow | None:
    if not settings.enabled:
        return None
    return DropoutTolerantSecAggPlus(
        num_shares=float(settings.num_shares), reconstruction_threshold=float(settings.reconstruction_threshold),
        max_weight=1.0,  # sites send weight 1; their arrays carry the per-part example weights
        clipping_range=settings.clipping_range, quantization_range=settings.quantization_range,
        modulus_range=2 ** 32, timeout=settings.timeout_s,
    )

