"""The randomness DP rests on, from a cryptographic generator the server cannot know: ChaCha20 keyed with 256
bits from the operating system, new for every privatized round (the SecAgg+ masks use the same cipher,
protocol/mask_prg.py).

- Gaussian noise: Box-Muller on 53-bit uniforms, computed in float64 on the parameters' own device, and drawn as
  the sum of four normals halved, as Opacus' `secure_mode` does against the floating-point attack (Mironov 2012;
  Holohan et al., arXiv 2107.10138 §5.1): one float Gaussian's low bits can give its input away, a sum of 2n does
  not (n = 2).
- Poisson sampling: each patient is in a batch when a ChaCha20 uniform falls below the sample rate.

Opacus draws both from torch generators (Mersenne Twister on the CPU, Philox on CUDA); its own secure mode needs
torchcsprng, which has no build for current torch. `client/privacy.py` plugs this source into Opacus' optimizer
and data loader instead.
"""

from __future__ import annotations

import math
import os

import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from opacus.utils.uniform_sampler import UniformWithReplacementSampler

_MANTISSA = (1 << 53) - 1


class ChaChaSource:
    """A ChaCha20 keystream as uniforms, Gaussians and Poisson masks. `key` only for tests (default: 32 bytes of
    operating-system entropy)."""

    name = "chacha20"

    def __init__(self, key: bytes | None = None, nonce: bytes | None = None):
        self._stream = Cipher(algorithms.ChaCha20(key or os.urandom(32), nonce or os.urandom(16)), mode=None).encryptor()

    def words(self, n: int) -> torch.Tensor:
        """n random 53-bit integers (int64, CPU)."""
        raw = torch.frombuffer(bytearray(self._stream.update(bytes(8 * n))), dtype=torch.int64) if n else torch.zeros(0, dtype=torch.int64)
        return raw & _MANTISSA

    def uniform(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """n float64 uniforms in (0, 1), on `device`."""
        return (self.words(n).to(device).double() + 0.5) * 2.0 ** -53

    def standard_normal(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """n float64 N(0, 1) values: Box-Muller, both branches used."""
        pairs = (n + 1) // 2
        u = self.uniform(2 * pairs, device)
        radius = torch.sqrt(-2.0 * torch.log(u[:pairs]))
        angle = 2.0 * math.pi * u[pairs:]
        return torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])[:n]

    def gaussian_like(self, reference: torch.Tensor, std: float) -> torch.Tensor:
        """N(0, std²) shaped, typed and placed like `reference`: the sum of four normals, halved (secure mode)."""
        n = reference.numel()
        if std == 0 or n == 0:
            return torch.zeros_like(reference)
        total = self.standard_normal(4 * n, reference.device).view(4, n).sum(0) / 2.0
        return (std * total).view(reference.shape).to(reference.dtype)

    def poisson_mask(self, n: int, rate: float) -> torch.Tensor:
        """Each of n items in with probability `rate`, independently."""
        return self.uniform(n) < rate


class ChaChaPoissonSampler(UniformWithReplacementSampler):
    """Opacus' Poisson batch sampler with batch membership drawn from a ChaChaSource."""

    def __init__(self, *, num_samples: int, sample_rate: float, source: ChaChaSource, steps: int | None = None):
        super().__init__(num_samples=num_samples, sample_rate=sample_rate, steps=steps)
        self.source = source

    def __iter__(self):
        for _ in range(self.steps):
            yield self.source.poisson_mask(self.num_samples, self.sample_rate).nonzero(as_tuple=False).reshape(-1).tolist()
