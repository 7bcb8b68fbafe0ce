"""The round contract: what the server asks of a site for one round, sent as a flat Flower ConfigRecord.
The server builds it, the site parses it; its field names are the record's keys, defined here only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundConfig:
    study: str
    phase: str
    server_round: int
    preset: str
    plan: str  # "phase:rounds:local_epochs,..." (the whole study, for the noise multiplier)
    local_epochs: int = 1
    lr: float = 1e-3
    proximal_mu: float = 0.0
    finetune_mode: str = "full"
    dp: bool = True
    # What the study asks of the sites' privacy (0: whatever the site's own policy says). A site trains with
    # its own clipping norm and budget and declines a round that asks for more than its policy grants.
    max_grad_norm: float = 0.0
    target_epsilon: float = 0.0
    max_site_examples: int = 1000
    max_update_ratio: float = 1.0  # the server's bound on an update; a site checks its own before sending
    seed: int = 0
    # "local": each site's DP-SGD adds all the noise; "distributed": one noisy step per round, each site adding
    # its share σ/√t of the study's noise multiplier σ, SecAgg+ summing (client/distributed_dp.py)
    dp_mode: str = "local"
    noise_multiplier: float = 0.0  # distributed: σ of the summed step
    dp_batch: int = 0  # distributed: expected samples per site per step (the common divisor of the sum)
    # Set by the site's own SecAgg+ mod from its SecAgg+ state (never taken from the server): the reconstruction
    # threshold t, 0 when the round did not come through SecAgg+.
    secagg_threshold: int = 0
    # Top-level model parts fewer than secagg.min_contributors sites would train: nobody trains them this round
    # (comma-separated; protocol/round_admission.py)
    frozen_parts: str = ""
    # DP pretraining: the public pairs' embeddings under this round's global model (protocol/public_bank.py)
    public_bank: bytes = b""

    @classmethod
    def from_record(cls, record: dict) -> "RoundConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    def to_record(self) -> dict:
        return dataclasses.asdict(self)


def parse_plan_text(text: str) -> list[tuple[str, int, int, float]]:
    """'pretrain:2:1:0.2,finetune:3:2:0.8' -> [(phase, rounds, local epochs, budget share), ...]; the share is
    optional (0: no split, one σ for the whole plan)."""
    out = []
    for item in (item for item in text.split(",") if item):
        name, rounds, epochs, *share = item.split(":")
        out.append((name, int(rounds), int(epochs), float(share[0]) if share else 0.0))
    return out


def plan_text(phases: list[tuple]) -> str:
    """[(phase, rounds, local epochs[, budget share]), ...] -> the text form (the share only where one is set)."""
    return ",".join(":".join([str(p[0]), str(p[1]), str(p[2])] + ([f"{p[3]:g}"] if len(p) > 3 and p[3] else []))
                    for p in phases)
