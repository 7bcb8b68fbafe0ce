"""The model's weights as NumPy arrays, the form they travel in: in `state_dict` order of the preset's model,
which the server and every site build with the same `build_model`."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from torch import nn


@cache
def state_layout(preset: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(name, shape) of every tensor of the preset's model, in `state_dict` order."""
    from shared_models.cardiacnets import build_model

    return tuple((name, tuple(value.shape)) for name, value in build_model(preset).state_dict().items())


def numpy_state(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def load_numpy_state(model: nn.Module, state: dict[str, np.ndarray]) -> nn.Module:
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model


def unpack_state(packed: list[np.ndarray], preset: str) -> dict[str, np.ndarray]:
    """The global weights a Flower message carries (protocol/codec.py), by name."""
    from protocol.codec import decode_weights

    return decode_weights(packed, state_layout(preset))
