"""Strict JSON for metrics: an undefined metric (NaN, inf) becomes null and numpy scalars plain numbers, in
nested dicts and lists alike. Used for `metrics.json` files and the run database's JSON columns."""

from __future__ import annotations

import math

import numpy as np


def finite_or_null(value):
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
