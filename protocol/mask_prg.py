"""The SecAgg+ mask generator, from a cryptographic PRG. Flower 1.41's `pseudo_rand_gen` folds the shared
secret to a 32-bit seed for NumPy's Mersenne Twister (flwrlabs/flower#7522), so masks could be found by trying
2^32 seeds. This is a drop-in replacement with the same signature: ChaCha20 keyed with SHA-256 of the whole
secret. Both ends must use it (client/client_app.py and server/secure_aggregation.py install it), or the masks
do not cancel and the round aggregates garbage without an error: so the lab names its generator in each round's
admission query (protocol/round_admission.py) and a site whose generator differs declines the round.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

_DOMAIN = b"cardiacfl secagg+ mask v1"
NAME = "chacha20-sha256/cardiacfl-secagg-mask-v1"  # what a module with this generator installed is called


def chacha20_masks(seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Uniform integers in [0, num_range) shaped like `dimensions_list` (int64), determined by `seed` alone."""
    key = hashlib.sha256(_DOMAIN + bytes(seed)).digest()
    sizes = [math.prod(shape) for shape in dimensions_list]  # a 0-d shape gives one value
    stream = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(8 * sum(sizes)))
    # 64 random bits reduced mod a range of at most 2^32: the bias is below 2^-32.
    values = (np.frombuffer(stream, dtype="<u8") % np.uint64(num_range)).astype(np.int64)
    out, offset = [], 0
    for shape, size in zip(dimensions_list, sizes):
        out.append(values[offset:offset + size].reshape(shape))
        offset += size
    return out


def install(module) -> None:
    """Make a Flower SecAgg+ module (the client mod or the server workflow) draw its masks from ChaCha20."""
    if not hasattr(module, "pseudo_rand_gen"):
        raise RuntimeError(f"{module.__name__} has no pseudo_rand_gen: the SecAgg+ mask seam moved in this Flower version")
    module.pseudo_rand_gen = chacha20_masks


def installed_name(module) -> str:
    """The name of the mask generator a Flower SecAgg+ module will use: NAME, or the stock one's."""
    generator = getattr(module, "pseudo_rand_gen", None)
    if generator is chacha20_masks:
        return NAME
    return f"{getattr(generator, '__module__', '?')}.{getattr(generator, '__name__', '?')}"
