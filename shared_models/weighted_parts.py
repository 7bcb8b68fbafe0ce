"""Model arrays for federated averaging where each part of the model is weighted by the examples that
trained *it* (an ECG-only site trains the ECG encoder but not the CMR side or the generator).

A site sends, in `state_dict` order, every tensor multiplied by its part's weight s = examples / scale,
then one 1-element array per part holding s. Any plain mean over sites (FedAvg with equal weights, or
SecAgg+'s masked sum / count) then gives mean(s·w) and mean(s) per part, and
w_part = mean(s·w) / mean(s) is the example-weighted average over the sites that trained the part; a part
nobody trained keeps the previous global weights. Only these arrays leave a site.
"""

from __future__ import annotations

import numpy as np


def part_of(name: str) -> str:
    return name.split(".", 1)[0]


def model_parts(names: list[str]) -> list[str]:
    return sorted({part_of(n) for n in names})


def encode_update(state: dict[str, np.ndarray], examples: dict[str, int], scale: float) -> list[np.ndarray]:
    """state: the site's weights after training; examples: per part, the samples that trained it (0 or
    missing: the part was not trained here). `scale` keeps s <= 1 (SecAgg+ clips values to its range)."""
    parts = model_parts(list(state))
    weight = {p: min(examples.get(p, 0) / scale, 1.0) for p in parts}
    arrays = [np.asarray(v, dtype=np.float32) * weight[part_of(k)] for k, v in state.items()]
    return arrays + [np.array([weight[p]], dtype=np.float32) for p in parts]


def update_shapes(state: dict[str, np.ndarray]) -> list[tuple[int, ...]]:
    """The shapes of an encoded update for a model with this state: its tensors, then one (1,) per part."""
    return [tuple(np.shape(v)) for v in state.values()] + [(1,)] * len(model_parts(list(state)))


def decode_aggregate(mean_arrays: list[np.ndarray], previous: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """(new global state, mean weight per part) from the plain mean of the sites' encoded arrays."""
    names, parts = list(previous), model_parts(list(previous))
    if len(mean_arrays) != len(names) + len(parts):
        raise ValueError(f"{len(mean_arrays)} arrays received, expected {len(names) + len(parts)} (weights + part weights)")
    part_weight = {p: float(mean_arrays[len(names) + i][0]) for i, p in enumerate(parts)}
    state = {}
    for name, array in zip(names, mean_arrays):
        s = part_weight[part_of(name)]
        state[name] = (array / s).astype(np.float32) if s > 1e-12 else previous[name]
    return state, part_weight
