"""Strict JSON for machine-readable command output.

Exports:
    json_safe(x)   nested dicts/lists with NaN and infinities as null and numpy scalars as Python
"""
import math

import numpy as np


def json_safe(x):
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x
