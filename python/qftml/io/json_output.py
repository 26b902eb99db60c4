"""Command outputs: strict JSON, and the stem that names a command's sibling files.

Exports:
    json_safe(x)        nested dicts/lists with NaN and infinities as null and numpy scalars as Python
    output_stem(path)   OUT for OUT.h5 / OUT.hdf5 (else the path itself): OUT.json, OUT_<plot>.png, ...
"""
import math
import os

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


def output_stem(path) -> str:
    root, ext = os.path.splitext(os.fspath(path))
    return root if ext in (".h5", ".hdf5") else os.fspath(path)
