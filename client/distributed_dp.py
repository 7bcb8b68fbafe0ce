"""Distributed DP through SecAgg+: the noise of one DP-SGD step is split among the sites, and only the sum is seen.

Mechanism (one noisy step per round). In round r every taking-part site k
1. Poisson-samples its patients at rate q_k = 1 / ceil(N_k / b) (b: the study's `dp_batch`, the same everywhere);
2. sums their per-sample gradients, each clipped to C (one item per patient: client/site_round.phase_dataset);
3. adds its share of the noise, N(0, (σC)² / t), from its own ChaCha20 source (client/secure_random.py);
4. takes one plain SGD step, w_k = w - lr (sum_k + noise_k) / b, and sends w_k masked by SecAgg+.
The server unmasks only the mean over the n sites in the sum, w - lr / (n b) · (Σ_k sum_k + Σ_k noise_k): one
DP-SGD step on the union of the sites' patients, whose noise has standard deviation σC·√(n/t) ≥ σC whenever
n ≥ t. t is the SecAgg+ reconstruction threshold, the fewest sites whose sum the server can unmask; a site
reads it from its own SecAgg+ state (client/client_app.py), and the server refuses a sum with fewer than t
shares (server/strategy.py). Each site's ledger records (σ, q_k, 1 step) per round: one patient changes one
clipped term of the sum, and the server sees nothing else of the round.

Why one step: with several local steps, step s at site k starts from weights that moved with site k's own
earlier noise shares, which the server never sees alone; the sum of the sites' trajectories is then not a
composition of Gaussian mechanisms each carrying the full noise, and no accountant here covers it. A linear
update (plain SGD, no Adam moments at the site) keeps the sum of the shares the sum of the noise; the
server's optimizer (FedAdam, ...) then acts on the aggregate, which is post-processing.

What it assumes (README "Threat model"): every site adds its share (a site that skips it weakens everyone's
guarantee by its part), SecAgg+ holds (fewer than t sites collude with the server), and the server follows the
protocol (honest but curious): a server that unmasks a sum of fewer than t shares breaks SecAgg+ itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from client.secure_random import ChaChaSource


def noise_share(noise_multiplier: float, threshold: int) -> float:
    """The noise multiplier each site adds: σ / √t, so that any t shares sum to σ."""
    if threshold < 2:
        raise ValueError(f"distributed DP needs a SecAgg+ threshold of at least 2 sites, got {threshold}")
    return noise_multiplier / math.sqrt(threshold)


@torch.no_grad()
def add_noise_share_only(parameters: list[nn.Parameter], *, share: float, max_grad_norm: float, lr: float,
                         batch: int, source: ChaChaSource | None = None) -> None:
    """A site with no patients for this phase still adds its share, so that the sum carries the noise it
    promises: the SGD step of a zero gradient plus N(0, (share·C)²)."""
    source = source or ChaChaSource()
    for p in parameters:
        p.sub_(lr * source.gaussian_like(p, share * max_grad_norm) / batch)
