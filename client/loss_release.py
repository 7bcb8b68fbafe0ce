"""A DP round's training loss, released only under DP. The exact mean loss of a round is a function of the
private batch that the DP guarantee on the update does not cover; a site sends none, or, where its policy sets
`privacy.loss_noise_multiplier` σ_L > 0, this Gaussian mechanism:

    dp_loss = (Σ_i clip(ℓ_i, 0, B) + N(0, (σ_L B)²)) / n

over the n patients the phase trained on, ℓ_i each one's loss under the round's final model, B =
`privacy.loss_bound`. Adding or removing one patient moves the sum by at most B, so it is one Gaussian mechanism
of noise multiplier σ_L on the whole dataset: the ledger records (σ_L, 1, 1), and its ε counts like any round's.
n is the count the fit reply already carries. A release that would take the site past its budget is withheld.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from client.privacy_ledger import PrivacyLedger
from client.secure_random import ChaChaSource
from shared_models.training import PhaseObjective


@torch.no_grad()
def clipped_loss_sum(objective: PhaseObjective, data: Dataset, bound: float, device: torch.device) -> float:
    """Σ_i clip(ℓ_i, 0, bound) over `data` (each patient once)."""
    objective.model.eval()
    total = 0.0
    for batch in DataLoader(data, batch_size=64):
        batch = {k: v.to(device) for k, v in batch.items()}
        total += float(objective.per_sample(batch).clamp(0.0, bound).sum())
    objective.model.train()
    return total


def release_loss(ledger: PrivacyLedger, objective: PhaseObjective, data: Dataset, *, noise_multiplier: float,
                 bound: float, device: torch.device, study: str, phase: str, server_round: int) -> float | None:
    """The noised mean loss, its ε recorded in `ledger`; None when the site's policy or budget withholds it."""
    if noise_multiplier <= 0 or len(data) == 0 or ledger.check(1.0, 1, sigma=noise_multiplier):
        return None
    total = clipped_loss_sum(objective, data, bound, device)
    noisy = total + float(ChaChaSource().gaussian_like(torch.zeros(1), noise_multiplier * bound))
    ledger.record(ledger.history + [[noise_multiplier, 1.0, 1]], study=study, phase=f"{phase}:loss",
                  server_round=server_round, steps=1)
    return noisy / len(data)
