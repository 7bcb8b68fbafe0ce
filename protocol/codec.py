"""The one update codec: how model weights and a site's update travel, and what an update must be to be averaged.

**Wire.** Flower stores and moves every array of a message as its own object, one HTTP request per array per hop
(ServerApp -> SuperLink -> SuperNode -> ClientApp, and back); the `small` preset has 168 arrays. Every message here
carries one float32 vector, cut back into the model's known shapes at the other end: one request per hop.

**Part weights.** Each part of the model (`ecg_encoder`, `generator`, ...) is weighted by the examples that trained
*it* (an ECG-only site trains the ECG encoder but not the CMR side or the generator). A site's update is every
tensor multiplied by its part's weight s = examples / scale, then one value per part holding s. Any plain mean over
sites (uniform FedAvg, or SecAgg+'s masked sum / count) gives mean(s·w) and mean(s) per part, and
w_part = mean(s·w) / mean(s) is the example-weighted average over the sites that trained the part; a part nobody
trained keeps the previous global weights. `scale` keeps s <= 1 (SecAgg+ clips values to its range).

**Checks.** An update must have the model's size, finite values, part weights in [0, 1] and a change no larger
than `max_update_ratio` times the global model's norm. The server checks each plain reply; under SecAgg+ it sees
only the mean, so it checks that, and each site checks its own update before masking it.

NumPy only: the thin ClientApp imports this module.
"""

from __future__ import annotations

import numpy as np

State = dict[str, np.ndarray]


class UpdateRejected(ValueError):
    """An update that cannot be averaged in; the message says why."""


def part_of(name: str) -> str:
    return name.split(".", 1)[0]


def model_parts(names) -> list[str]:
    return sorted({part_of(n) for n in names})


def _vector(arrays) -> list[np.ndarray]:
    arrays = list(arrays)
    return [np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])] if arrays else []


def _split(packed: list[np.ndarray], shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    sizes = [int(np.prod(shape)) for shape in shapes]
    if len(packed) != 1 or np.ndim(packed[0]) != 1 or np.size(packed[0]) != sum(sizes):
        got = [tuple(np.shape(a)) for a in packed][:3]
        raise UpdateRejected(f"expected one vector of {sum(sizes)} values, got {len(packed)} array(s) of shapes {got}")
    pieces = np.split(np.asarray(packed[0], dtype=np.float32), np.cumsum(sizes)[:-1])
    return [piece.reshape(shape) for piece, shape in zip(pieces, shapes)]


# --- global weights: server -> site, and the server's own state between rounds ---

def encode_weights(state: State) -> list[np.ndarray]:
    """Weights in `state_dict` order -> [one float32 vector]."""
    return _vector(state.values())


def decode_weights(packed: list[np.ndarray], layout) -> State:
    """[one vector] -> weights by name; `layout` is ((name, shape), ...) of the model both ends build."""
    names = [name for name, _ in layout]
    return dict(zip(names, _split(packed, [tuple(shape) for _, shape in layout])))


# --- a site's update: site -> server ---

def encode_update(state: State, examples: dict[str, int], scale: float) -> list[np.ndarray]:
    """state: the site's weights after training; examples: per part, the samples that trained it (0 or missing:
    the part was not trained here) -> [one vector] of part-weighted tensors and part weights."""
    parts = model_parts(state)
    weight = {p: min(examples.get(p, 0) / scale, 1.0) for p in parts}
    tensors = (np.asarray(v, dtype=np.float32) * weight[part_of(k)] for k, v in state.items())
    return _vector([*tensors, *(np.array([weight[p]], dtype=np.float32) for p in parts)])


def update_problem(packed: list[np.ndarray], global_state: State, max_update_ratio: float) -> str | None:
    """None for an update (or a mean of updates) that may touch the global model, else why not."""
    try:
        check_update(packed, global_state, max_update_ratio)
    except UpdateRejected as err:
        return str(err)
    return None


def check_update(packed: list[np.ndarray], global_state: State, max_update_ratio: float) -> dict[str, float]:
    """The update's part weights, or UpdateRejected saying what is wrong with it."""
    names, parts = list(global_state), model_parts(global_state)
    arrays = _split(packed, [tuple(np.shape(v)) for v in global_state.values()] + [(1,)] * len(parts))
    if not np.isfinite(packed[0]).all():
        raise UpdateRejected("non-finite values (NaN or infinity)")
    weights = {part: float(array[0]) for part, array in zip(parts, arrays[len(names):])}
    outside = {p: w for p, w in weights.items() if not 0.0 <= w <= 1.0}
    if outside:
        raise UpdateRejected(f"part weights outside [0, 1]: {outside}")
    delta_sq, global_sq = 0.0, 0.0
    for name, array in zip(names, arrays):
        weight = weights[part_of(name)]
        if weight <= 1e-12:
            continue  # a part this site did not train
        reference = np.asarray(global_state[name], dtype=np.float64)
        delta_sq += float(((array.astype(np.float64) / weight - reference) ** 2).sum())
        global_sq += float((reference ** 2).sum())
    bound = max_update_ratio * max(np.sqrt(global_sq), 1.0)
    if np.sqrt(delta_sq) > bound:
        raise UpdateRejected(f"update norm {np.sqrt(delta_sq):.3g} exceeds the bound {bound:.3g} "
                             f"({max_update_ratio:g} x the global model's)")
    return weights


def decode_mean(mean: list[np.ndarray], previous: State) -> tuple[State, dict[str, float]]:
    """(new global weights, mean weight per part) from the plain mean of the sites' encoded updates."""
    names, parts = list(previous), model_parts(previous)
    arrays = _split(mean, [tuple(np.shape(v)) for v in previous.values()] + [(1,)] * len(parts))
    part_weight = {p: float(arrays[len(names) + i][0]) for i, p in enumerate(parts)}
    state = {}
    for name, array in zip(names, arrays):
        s = part_weight[part_of(name)]
        state[name] = (array / s).astype(np.float32) if s > 1e-12 else previous[name]
    return state, part_weight
