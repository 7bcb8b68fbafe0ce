"""Self-describing checkpoints: weights, model config, phase, step and the data it was trained on.

Format: one `torch.save` file holding {"format": 1, "config": {...}, "phase": str, "step": int,
"data_hash": str, "state_dict": {name: tensor}}. The state dict is flat (names -> tensors), in the order
`build_model` makes it, which is also the order the weights travel in (protocol/codec.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from shared_models.cardiacnets import CardiacNets, build_model
from shared_models.atomic_files import atomic_write
from shared_models.config import CardiacNetsConfig

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, model: CardiacNets, *, phase: str, step: int, data_hash: str = "") -> None:
    payload = {
        "format": CHECKPOINT_FORMAT, "config": model.config.to_dict(), "phase": phase, "step": step,
        "data_hash": data_hash, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    atomic_write(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[CardiacNets, dict]:
    """(model with weights loaded, metadata without the weights)."""
    payload = torch.load(Path(path), map_location=map_location, weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    model = build_model(CardiacNetsConfig.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
