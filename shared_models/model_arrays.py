"""The model's weights as NumPy arrays, the form they travel in: in `state_dict` order of the preset's model,
which the server and every site build with the same `build_model`."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn


@cache
def state_names(preset: str) -> tuple[str, ...]:
    from shared_models.cardiacnets import build_model

    return tuple(build_model(preset).state_dict())


def numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model



@cache
def state_shapes(preset: str) -> tuple[tuple[int, ...], ...]:
    from shared_models.cardiacnets import build_model

    return tuple(tuple(v.shape) for v in build_model(preset).state_dict().values())


def unpack_state(packed: list[np.ndarray], preset: str) -> dict[str, np.ndarray]:
    """The global weights a Flower message carries (shared_models/wire.py), by name."""
    from shared_models.wire import unpack

    return dict(zip(state_names(preset), unpack(packed, list(state_shapes(preset)))))
