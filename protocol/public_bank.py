"""The public alignment bank as it travels in a pretrain round's ConfigRecord: unit embeddings of the lab's public
ECG-CMR pairs under the round's global model, the negatives each site's private pairs are contrasted with under
DP (`CardiacNets.public_bank_loss`). One bytes value: a header (pairs, dim) then the ECG and CMR embeddings as
float16 (600 public pairs x 64 dims: 150 kB). Public data only: nothing here is about a site.

NumPy only: the thin ClientApp imports this module.
"""

from __future__ import annotations

import numpy as np

_HEADER = np.dtype("<i4")
_VALUES = np.dtype("<f2")


def encode_bank(ecg: np.ndarray, cmr: np.ndarray) -> bytes:
    if ecg.shape != cmr.shape or ecg.ndim != 2:
        raise ValueError(f"bank: ECG {ecg.shape} and CMR {cmr.shape} embeddings must be (pairs, dim) alike")
    header = np.array(ecg.shape, dtype=_HEADER)
    return header.tobytes() + np.concatenate([ecg, cmr]).astype(_VALUES).tobytes()


def decode_bank(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """-> (ecg, cmr) float32 (pairs, dim); ValueError naming what is wrong with a malformed bank."""
    if len(data) < 8:
        raise ValueError(f"public bank: {len(data)} bytes, shorter than its header")
    pairs, dim = (int(v) for v in np.frombuffer(data[:8], dtype=_HEADER))
    expected = 8 + 2 * pairs * dim * _VALUES.itemsize
    if pairs < 1 or dim < 1 or len(data) != expected:
        raise ValueError(f"public bank: header says {pairs} pairs x {dim} dims ({expected} bytes), got {len(data)} bytes")
    values = np.frombuffer(data[8:], dtype=_VALUES).astype(np.float32).reshape(2, pairs, dim)
    if not np.isfinite(values).all():
        raise ValueError("public bank: non-finite embeddings")
    return values[0], values[1]
