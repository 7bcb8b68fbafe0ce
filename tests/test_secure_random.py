"""DP's randomness at a site comes from ChaCha20 keyed by the operating system (client/secure_random.py), never
from a source the server can know: each test would pass if sampling or noise fell back to torch's generators
seeded the same way twice, and fails then."""

import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.privacy import OpacusPrivatizer
from client.secure_random import ChaChaPoissonSampler, ChaChaSource

N, FEATURES = 64, 3


def _private_step(seed: int, sigma: float = 2.0, clip: float = 1.0):
    """One DP step of a zero loss (gradients are the noise alone) after seeding torch as a server would;
    -> (the batches the loader draws over one epoch, the noisy gradient)."""
    torch.manual_seed(seed)
    data = TensorDataset(torch.arange(N, dtype=torch.float32).unsqueeze(1).repeat(1, FEATURES))
    model = nn.Linear(FEATURES, 1)
    privatizer = OpacusPrivatizer(noise_multiplier=sigma, max_grad_norm=clip)
    module, optimizer, loader = privatizer(model, torch.optim.SGD(model.parameters(), lr=1.0),
                                           DataLoader(data, batch_size=8, generator=torch.Generator().manual_seed(seed)))
    assert isinstance(loader.batch_sampler, ChaChaPoissonSampler)
    batches = [sorted(int(x) for x in batch[0][:, 0]) for batch in loader]
    (x,) = next(iter(loader))
    (module(x) * 0.0).sum().backward()
    optimizer.pre_step()  # clip (zero) + noise, without the step
    noise = torch.cat([p.grad.flatten() for p in model.parameters()]).detach().clone()
    privatizer.close()
    return batches, noise, optimizer.expected_batch_size


def test_poisson_batches_and_noise_do_not_follow_the_servers_seed():
    batches_a, noise_a, _ = _private_step(seed=5)
    batches_b, noise_b, _ = _private_step(seed=5)
    assert batches_a != batches_b  # same seed, same data: different membership
    assert not torch.equal(noise_a, noise_b)  # and different noise


def test_the_noise_comes_from_the_operating_systems_entropy(monkeypatch):
    """With os.urandom pinned, the same seed gives the same noise: nothing else feeds it."""
    monkeypatch.setattr(os, "urandom", lambda n: bytes(range(n)))
    batches_a, noise_a, _ = _private_step(seed=5)
    batches_b, noise_b, _ = _private_step(seed=6)  # a different server seed changes nothing
    assert batches_a == batches_b and torch.equal(noise_a, noise_b)


def test_the_noise_has_opacus_scale_and_the_batches_its_rate():
    sigma, clip = 2.0, 1.0
    noises, sizes = [], []
    for seed in range(40):
        batches, noise, expected = _private_step(seed, sigma, clip)
        noises.append(noise)
        sizes += [len(b) for b in batches]
    # Opacus divides the noisy sum by the expected batch size; 40 x 4 values of N(0, (σC / B)²)
    assert float(torch.cat(noises).std()) == pytest.approx(sigma * clip / expected, rel=0.15)
    assert sum(sizes) / len(sizes) == pytest.approx(8, rel=0.15)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def test_the_noise_is_made_on_the_parameters_device(device):
    reference = torch.zeros(100_000, device=device, dtype=torch.float32)
    noise = ChaChaSource().gaussian_like(reference, 3.0)
    assert noise.device == reference.device and noise.dtype == reference.dtype and noise.shape == reference.shape
    assert float(noise.std()) == pytest.approx(3.0, rel=0.02) and abs(float(noise.mean())) < 0.05
    # the sum of four normals, halved: still Gaussian (kurtosis 3)
    z = (noise / 3.0).double()
    assert float((z ** 4).mean()) == pytest.approx(3.0, rel=0.05)


def test_a_moved_noise_seam_fails_loudly():
    from opacus.optimizers.optimizer import DPOptimizer

    from client.privacy import add_noise_from

    class Elsewhere(DPOptimizer):
        def add_noise(self):
            pass

    model = nn.Linear(2, 1)
    optimizer = Elsewhere(torch.optim.SGD(model.parameters(), lr=1.0), noise_multiplier=1.0, max_grad_norm=1.0,
                          expected_batch_size=4)
    with pytest.raises(RuntimeError, match="noise seam"):
        add_noise_from(optimizer, ChaChaSource())
