"""How model arrays travel in a Flower message: as one float32 vector.

Flower stores and moves every array of a message as its own object, one HTTP request per array per hop (ServerApp
-> SuperLink -> SuperNode -> ClientApp, and back). The `small` preset has 168 arrays, so a round was hundreds of
requests per site through TLS. One vector, cut back into the known shapes at the other end, is one request per hop.
SecAgg+ masks and sums the vector element by element, as it did the list. NumPy only: the thin ClientApp imports it.
"""

from __future__ import annotations

import numpy as np


def pack(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Arrays -> [one float32 vector]."""
    return [np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])] if arrays else []


def unpack(packed: list[np.ndarray], shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """[one vector] -> arrays of `shapes`; ValueError saying what arrived when it cannot be theirs."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    if len(packed) != 1 or np.ndim(packed[0]) != 1 or np.size(packed[0]) != sum(sizes):
        got = [tuple(np.shape(a)) for a in packed][:3]
        raise ValueError(f"expected one vector of {sum(sizes)} values, got {len(packed)} array(s) of shapes {got}")
    pieces = np.split(np.asarray(packed[0], dtype=np.float32), np.cumsum(sizes)[:-1])
    return [piece.reshape(shape) for piece, shape in zip(pieces, shapes)]
