"""Opacus at a site: it makes a site's training step private and carries the privacy accountant's history,
so the training loop itself never changes ("business as usual" after make_private).

The randomness DP rests on never comes from a seed the server sends: the Gaussian noise and the Poisson sampling
of batches (which the privacy amplification assumes secret) come from ChaCha20 keyed from `os.urandom`
(client/secure_random.py), plugged into Opacus' optimizer (`add_noise`) and given to it as the data loader's batch
sampler. Data order and augmentation may stay reproducible; these may not.
"""

from __future__ import annotations

import types
import warnings
from typing import Iterable

from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _mark_as_processed
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from client.secure_random import ChaChaPoissonSampler, ChaChaSource


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
        with warnings.catch_warnings():  # "Secure RNG turned off": Opacus' own; ours is on (client/secure_random.py)
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = PrivacyEngine(accountant="rdp")
        self.source = ChaChaSource()  # noise and sampling (client/secure_random.py)
        if history:
            self.engine.accountant.load_state_dict({"history": [tuple(h) for h in history], "mechanism": "rdp"})
        self.module: nn.Module | None = None

    def __call__(self, objective: nn.Module, optimizer: Optimizer, loader: Iterable):
        if self.poisson_sampling:  # Opacus' own Poisson loader, with the batch sampler drawing from ChaCha20
            loader = chacha_poisson_loader(loader, self.source)
        # poisson_sampling=False: the loader is already Poisson; Opacus reads the same rate from its length
        self.module, optimizer, loader = self.engine.make_private(
            module=objective, optimizer=optimizer, data_loader=loader, noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm, poisson_sampling=False, grad_sample_mode=self.grad_sample_mode)
        if self.poisson_sampling:
            self.module.forbid_grad_accumulation()  # as make_private does for its own Poisson loader
        add_noise_from(optimizer, self.source)
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


def chacha_poisson_loader(loader: DataLoader, source: ChaChaSource) -> DataLoader:
    """`loader`'s data as Opacus' DP data loader makes it (its empty-batch-safe collate, rate 1 / len(loader)),
    batches drawn by a ChaChaPoissonSampler."""
    template = DPDataLoader.from_data_loader(loader)
    sampler = ChaChaPoissonSampler(num_samples=len(loader.dataset), sample_rate=template.sample_rate, source=source)
    return DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=template.collate_fn)


def add_noise_from(optimizer: DPOptimizer, source: ChaChaSource) -> None:
    """Opacus' `add_noise` (std = σ·C on every summed clipped gradient), with the noise drawn from `source` on
    the parameter's device instead of a torch generator. The seam is checked: an Opacus whose optimizer adds
    noise elsewhere fails here rather than silently using its own generator."""
    if not isinstance(optimizer, DPOptimizer) or type(optimizer).add_noise is not DPOptimizer.add_noise:
        raise RuntimeError(f"{type(optimizer).__name__}: Opacus' noise seam moved (DPOptimizer.add_noise); "
                           "refusing to train with a noise source this site did not choose")

    def add_noise(self: DPOptimizer) -> None:
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            noise = source.gaussian_like(p.summed_grad, self.noise_multiplier * self.max_grad_norm)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = types.MethodType(add_noise, optimizer)
