"""The one module that imports Opacus: it makes a site's training step private and carries the privacy
accountant's history, so the training loop itself never changes ("business as usual" after make_private).
"""

from __future__ import annotations

from typing import Iterable

from opacus import PrivacyEngine
from torch import nn
from torch.optim import Optimizer


class OpacusPrivatizer:
    """A `privatize` callable for `shared_models.training.train_phase`: wraps objective, optimizer and loader
    with Opacus at a fixed noise multiplier, on a PrivacyEngine whose RDP accountant starts from `history`
    (list of (noise_multiplier, sample_rate, steps)), so ε accumulates across calls instead of restarting."""

    def __init__(self, *, noise_multiplier: float, max_grad_norm: float, history: list | None = None,
                 poisson_sampling: bool = True, grad_sample_mode: str = "hooks"):
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.poisson_sampling = poisson_sampling
        self.grad_sample_mode = grad_sample_mode
        self.engine = PrivacyEngine(accountant="rdp")
        if history:
            self.engine.accountant.load_state_dict({"history": [tuple(h) for h in history], "mechanism": "rdp"})
        self.module: nn.Module | None = None

    def __call__(self, objective: nn.Module, optimizer: Optimizer, loader: Iterable):
        self.module, optimizer, loader = self.engine.make_private(
            module=objective, optimizer=optimizer, data_loader=loader, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm, poisson_sampling=self.poisson_sampling,
            grad_sample_mode=self.grad_sample_mode)
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
