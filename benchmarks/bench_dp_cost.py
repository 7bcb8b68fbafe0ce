"""DP-SGD cost for the ECG encoder's masked-modelling step: step time and peak memory with Opacus
(per-sample gradients by hooks or functorch) divided by the same step without, same batch, one run.

    .venv/bin/python benchmarks/bench_dp_cost.py [--presets tiny small] [--batch 32] [--steps 10]

Each configuration runs in its own process so that peak RSS belongs to it alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def run_one(preset: str, mode: str, batch_size: int, steps: int) -> dict:
    import torch
    from opacus import PrivacyEngine
    from torch import nn

    from shared_models.cardiacnets import build_model

    torch.manual_seed(0)
    model = build_model(preset)
    cfg = model.config.ecg
    T = cfg.samples_per_patch * cfg.patches_per_lead
    rows = [{"ecg": torch.randn(12, T) * 0.3, "lead_mask": torch.ones(12, dtype=torch.bool)} for _ in range(batch_size)]
    for name, p in model.named_parameters():
        p.requires_grad = name.split(".")[0] in ("ecg_encoder", "ecg_decoder")

    class Task(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return self.model.masked_ecg_loss(batch).mean()

    task = Task()
    optimizer = torch.optim.SGD([p for p in task.parameters() if p.requires_grad], lr=0.01)
    loader = torch.utils.data.DataLoader(rows, batch_size=batch_size)
    if mode != "plain":
        task, optimizer, loader = PrivacyEngine().make_private(
            module=task, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0, max_grad_norm=1.0,
            poisson_sampling=False, grad_sample_mode=mode)
    batch = next(iter(loader))
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        loss = task(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    times.sort()
    return {"preset": preset, "mode": mode, "step_s": times[len(times) // 2],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--modes", nargs="+", default=["hooks", "functorch"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1], args.batch, args.steps)))
        return
    print(f"{'preset':7s} {'mode':10s} {'step s':>8s} {'x plain':>8s} {'peak MiB':>9s} {'x plain':>8s}")
    for preset in args.presets:
        results = {}
        for mode in ["plain", *args.modes]:
            out = subprocess.run([sys.executable, __file__, "--child", preset, mode, "--batch", str(args.batch),
                                  "--steps", str(args.steps)], capture_output=True, text=True, check=True)
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        plain = results["plain"]
        for mode, r in results.items():
            print(f"{preset:7s} {mode:10s} {r['step_s']:8.3f} {r['step_s'] / plain['step_s']:8.2f} "
                  f"{r['peak_rss_mib']:9.0f} {r['peak_rss_mib'] / plain['peak_rss_mib']:8.2f}")


if __name__ == "__main__":
    main()
