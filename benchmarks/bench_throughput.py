"""Training throughput of the one training loop: ECG samples per second for each phase and preset, without DP
and with DP-SGD (Opacus, the site's own privatizer), and the ratio, measured in one run on this machine.

    .venv/bin/python benchmarks/bench_throughput.py [--presets small cpu] [--phases pretrain finetune] [--batch 32]

Pretraining without DP is the lab's InfoNCE pretraining (both sides, masked CMR modelling included); with DP it is
a site's per-sample alignment (ECG side only), so their ratio compares what each setting actually runs.
Batches are synthetic tensors of the real shapes (every sample paired with a CMR clip, 12 leads, labels), so the
figure is the model's cost, not the data loader's. torch uses all cores (`--threads` to change).
"""

from __future__ import annotations

import argparse
import time
import warnings


def batches(model, batch_size: int, n: int):
    import torch

    cfg = model.config
    T = cfg.ecg.samples_per_patch * cfg.ecg.patches_per_lead
    g = torch.Generator().manual_seed(0)
    rows = [{"ecg": torch.randn(12, T, generator=g) * 0.3, "lead_mask": torch.ones(12, dtype=torch.bool),
             "cmr": torch.rand(cfg.cmr.frames, cfg.cmr.image_size, cfg.cmr.image_size, generator=g),
             "has_cmr": torch.tensor(True), "indicators": torch.randn(9, generator=g) * 20 + 100,
             "indicator_mask": torch.ones(9, dtype=torch.bool), "diseases": (torch.rand(5, generator=g) < 0.2).float(),
             "disease_mask": torch.ones(5, dtype=torch.bool), "demographics": torch.tensor([60.0, 1.0]),
             "demographics_mask": torch.ones(2, dtype=torch.bool)} for _ in range(batch_size * n)]
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=False)


def measure(preset: str, phase: str, dp: bool, batch_size: int, steps: int) -> float:
    import torch

    from client.privacy import OpacusPrivatizer
    from shared_models.cardiacnets import build_model
    from shared_models.training import TrainOptions, train_phase

    torch.manual_seed(0)
    model = build_model(preset)
    loader = batches(model, batch_size, steps + 2)
    # without DP pretraining is the lab's InfoNCE + masked CMR modelling; with DP, a site's per-sample alignment
    options = TrainOptions(phase=phase, alignment="public-bank" if dp else "infonce", finetune_mode="full", max_steps=2)
    privatize = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False) if dp else None
    bank = model.public_bank(loader) if dp and phase == "pretrain" else None  # negatives: any pairs will do here
    train_phase(model, loader, options, public_bank=bank, privatize=privatize)  # warm-up: allocations, Opacus hooks
    if privatize:
        privatize.close()
        privatize = OpacusPrivatizer(noise_multiplier=1.0, max_grad_norm=1.0, poisson_sampling=False)
    options.max_steps = steps
    start = time.perf_counter()
    train_phase(model, loader, options, public_bank=bank, privatize=privatize)
    seconds = time.perf_counter() - start
    if privatize:
        privatize.close()
    return steps * batch_size / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "cpu"])
    parser.add_argument("--phases", nargs="+", default=["pretrain", "generator", "finetune"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.steps} steps")
    print(f"{'preset':8s} {'phase':10s} {'no DP /s':>10s} {'DP /s':>10s} {'DP / no DP':>11s}")
    for preset in args.presets:
        for phase in args.phases:
            plain = measure(preset, phase, False, args.batch, args.steps)
            private = measure(preset, phase, True, args.batch, args.steps)
            print(f"{preset:8s} {phase:10s} {plain:10.0f} {private:10.0f} {private / plain:11.2f}", flush=True)


if __name__ == "__main__":
    main()
