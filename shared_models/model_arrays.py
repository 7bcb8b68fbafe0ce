"""The order of the model's arrays on the wire: `state_dict` order of the preset's model, which the server
and every site build with the same `build_model`."""

from __future__ import annotations

from functools import cache

import numpy as np


@cache
def state_names(preset: str) -> tuple[str, ...]:
    from shared_models.cardiacnets import build_model

    return tuple(build_model(preset).state_dict())


def state_to_arrays(state: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(v, dtype=np.float32) for v in state.values()]
