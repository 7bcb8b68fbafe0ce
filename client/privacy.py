"""Opacus at a site: it makes a site's training step private and carries the privacy accountant's history,
so the training loop itself never changes ("business as usual" after make_private).

The randomness DP rests on comes from the operating system, never from a seed the server sends: both the
Gaussian noise and the Poisson sampling of batches (which the privacy amplification assumes secret) use
generators seeded from `os.urandom`. Data order and augmentation may stay reproducible; these may not.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch

from opacus import PrivacyEngine
from torch import nn
from torch.optim import Optimizer


class OpacusPrivatizer:
    """A `privatize` callable for `shared_models.training.train_phase`: wraps objective, optimizer and loader
    with Opacus at a fixed noise multiplier, on a PrivacyEngine whose RDP accountant starts from `history`
    (list of (noise_multiplier, sample_rate, steps)), so ε accumulates across calls instead of restarting."""

    def __init__(self, *, noise_multiplier: float, max_grad_norm: float, history: list | None = None,
                 poisson_sampling: bool = True, grad_sample_mode: str = "hooks", expected_batch_size: int = 0):
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.poisson_sampling = poisson_sampling
        self.grad_sample_mode = grad_sample_mode
        # The divisor of the noisy gradient sum (0: Opacus' own, N x sample rate). Distributed DP needs the same
        # one at every site, so that the sites' shares add up to one step (client/distributed_dp.py).
        self.expected_batch_size = expected_batch_size
        self.engine = PrivacyEngine(accountant="rdp")
        # Opacus' secure_mode needs torchcsprng, which has no build for current torch. Its data loader takes
        # the Poisson sampler's generator from `secure_rng`, so that is where the site's own entropy goes.
        self.engine.secure_rng = entropy_generator()
        self.noise_generator = entropy_generator()
        if history:
            self.engine.accountant.load_state_dict({"history": [tuple(h) for h in history], "mechanism": "rdp"})
        self.module: nn.Module | None = None

    def __call__(self, objective: nn.Module, optimizer: Optimizer, loader: Iterable):
        self.module, optimizer, loader = self.engine.make_private(
            module=objective, optimizer=optimizer, data_loader=loader, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm, poisson_sampling=self.poisson_sampling,
            grad_sample_mode=self.grad_sample_mode, noise_generator=self.noise_generator)
        _empty_batch_template(loader)
        if self.expected_batch_size:
            optimizer.expected_batch_size = self.expected_batch_size
        return self.module, optimizer, loader

    @property
    def history(self) -> list[tuple[float, float, int]]:
        """The accountant's full history (earlier rounds included), JSON-friendly."""
        return [tuple(entry) for entry in self.engine.accountant.history]

    def close(self) -> None:
        """Remove Opacus' hooks so the model can be trained or evaluated again without DP."""
        if self.module is not None:
            self.module._close()
            self.module = None


def _empty_batch_template(loader) -> None:
    """Opacus 1.6 makes an empty *first* Poisson batch from the items of dataset[0]; for samples that are dicts
    that fails (`torch.zeros(dtype=dict)`), and a small site lost the round. Its collator makes every later empty
    batch from the first batch's structure, so it gets one sample's batch as that template (only shapes and
    dtypes are used: the empty batch holds no data)."""
    collate = getattr(loader, "collate_fn", None)
    if getattr(collate, "first_batch", False) is None and len(loader.dataset):
        sample = [loader.dataset[0]]
        collate.first_batch = collate.wrapped_collator_fn(sample) if collate.wrapped_collator_fn else sample


def entropy_generator() -> torch.Generator:
    """A torch generator seeded with 64 bits from the operating system: unknown to the server."""
    return torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") & (2**63 - 1))
