"""Checks on a part-weighted update before it can touch the global model: the expected number and shapes of
arrays, finite values, part weights in [0, 1] and an update no larger than a bound relative to the global
model. A reply that fails is dropped and recorded with its reason; the round goes on without it.

With SecAgg+ the server never sees one site's update, so the same checks run on the unmasked aggregate (a
failing aggregate leaves the global model unchanged), and each site runs them on its own update before masking.
"""

from __future__ import annotations

import numpy as np

from shared_models.weighted_parts import model_parts, part_of


def update_problem(encoded: list[np.ndarray], global_state: dict[str, np.ndarray], max_update_ratio: float) -> str | None:
    """None for an acceptable part-weighted update (shared_models.weighted_parts layout), else why not."""
    names, parts = list(global_state), model_parts(list(global_state))
    if len(encoded) != len(names) + len(parts):
        return f"{len(encoded)} arrays, expected {len(names) + len(parts)}"
    for name, array in zip(names, encoded):
        if tuple(np.shape(array)) != tuple(np.shape(global_state[name])):
            return f"{name} has shape {tuple(np.shape(array))}, expected {tuple(np.shape(global_state[name]))}"
    weights = {}
    for part, array in zip(parts, encoded[len(names):]):
        if np.shape(array) != (1,):
            return f"part weight of {part} has shape {np.shape(array)}, expected (1,)"
        weights[part] = float(np.asarray(array)[0])
    if not all(np.isfinite(a).all() for a in encoded):
        return "non-finite values (NaN or infinity)"
    outside = {p: w for p, w in weights.items() if not 0.0 <= w <= 1.0}
    if outside:
        return f"part weights outside [0, 1]: {outside}"
    delta_sq, global_sq = 0.0, 0.0
    for name, array in zip(names, encoded):
        weight = weights[part_of(name)]
        if weight <= 1e-12:
            continue  # a part this site did not train
        reference = np.asarray(global_state[name], dtype=np.float64)
        delta_sq += float(((np.asarray(array, dtype=np.float64) / weight - reference) ** 2).sum())
        global_sq += float((reference ** 2).sum())
    bound = max_update_ratio * max(np.sqrt(global_sq), 1.0)
    if np.sqrt(delta_sq) > bound:
        return f"update norm {np.sqrt(delta_sq):.3g} exceeds the bound {bound:.3g} ({max_update_ratio:g} x the global model's)"
    return None
