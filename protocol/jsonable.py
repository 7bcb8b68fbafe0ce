"""Strict JSON for metrics: an undefined metric (NaN, inf) becomes null, numpy scalars and arrays plain numbers
and lists, anything else (paths, enums) its string, in nested dicts and lists alike. The one JSON-safe converter:
`metrics.json` files, the preprocessing cache's metadata and the run database's JSON columns."""

from __future__ import annotations

import math

import numpy as np


def finite_or_null(value):
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    if isinstance(value, np.ndarray):
        return finite_or_null(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
