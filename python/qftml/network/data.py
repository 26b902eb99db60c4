"""Data of the phi^4 networks: scikit-learn's bundled 8x8 digits, engine ensembles, .npy arrays.

Exports:
    SOURCES, TRANSFORMS
    load_data(source, path="", transform="none", threshold=0.5, max_samples=0) -> (n, features) float64
        source "digits": sklearn.datasets.load_digits (1797 x 64, values 0..16, ships with scikit-learn)
               "ensemble": /configs of a `qftml sample` file (configurations flattened)
               "npy": a 2D array in a .npy file
        transform "none"; "scale" (/ max |x|, digits: / 16); "binarize" (scale, then > threshold);
               "standardize" (zero mean, unit variance per feature; constant features left at 0)
    holdout_split(n, fraction, seed) -> (train_rows, test_rows)   Philox order (purpose network_split)
Errors are ValueError with the file name (the CLI maps them to exit 2).
"""
from __future__ import annotations

import os

import numpy as np

from qftml.engine import rng

SOURCES = ("digits", "ensemble", "npy")
TRANSFORMS = ("none", "scale", "binarize", "standardize")


def _raw(source, path):
    if source == "digits":
        from sklearn.datasets import load_digits

        return load_digits().data.astype(float)
    if not path:
        raise ValueError(f"data.source = {source!r} needs data.path")
    if not os.path.exists(path):
        raise ValueError(f"data.path {path}: no such file")
    if source == "npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"data.path {path}: not a readable .npy array ({e})") from None
        if x.ndim != 2:
            raise ValueError(f"data.path {path}: need a 2D array (samples, features), got shape {x.shape}")
        return np.asarray(x, dtype=float)
    if source == "ensemble":
        from qftml.io.ensembles import EnsembleFileError, read_configs

        try:
            x = read_configs(path)
        except (EnsembleFileError, KeyError, OSError) as e:
            raise ValueError(f"data.path {path}: no configurations to read ({e})") from None
        return np.asarray(x, dtype=float).reshape(len(x), -1)
    raise ValueError(f"data.source {source!r} unknown (allowed: {', '.join(SOURCES)})")


def load_data(source: str, path: str = "", transform: str = "none", threshold: float = 0.5,
              max_samples: int = 0) -> np.ndarray:
    x = _raw(source, path)
    if max_samples:
        x = x[:max_samples]
    if len(x) < 2:
        raise ValueError(f"data ({source} {path}): need at least 2 samples, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError(f"data ({source} {path}): the data contain NaN or infinite values")
    if transform in ("scale", "binarize"):
        top = np.abs(x).max()
        x = x / top if top > 0 else x
        if transform == "binarize":
            x = (x > threshold).astype(float)
    elif transform == "standardize":
        sd = x.std(axis=0)
        x = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    elif transform != "none":
        raise ValueError(f"data.transform {transform!r} unknown (allowed: {', '.join(TRANSFORMS)})")
    return np.ascontiguousarray(x)


def holdout_split(n: int, fraction: float, seed: int):
    order = np.argsort(rng.uniform(rng.derive_seed(seed, "network_split"), "network_split", np.arange(n)),
                       kind="stable")
    n_test = int(round(fraction * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])
