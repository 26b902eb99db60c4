"""The 1D quartic density p(x) ~ exp(-alpha x^2 - beta x^4 + j x): exact draws and integrals.

The C++ kernel is cpp/kernels/quartic_density.hpp (why the draws are exact and the integrals near
machine precision is written there). Every real unit of a phi^4 network has this conditional.

Exports:
    integral(alpha, beta, j) -> (logz, m1, m2, m4)   ln of the integral of exp(-alpha x^2 - beta x^4 + j x)
                                   and <x>, <x^2>, <x^4>; alpha, beta broadcast against the last axis of j
    sample(alpha, beta, j, seed, purpose_name, index0, step) -> (x, attempts)
                                   exact draws; element i (flat, C order) of j uses the Philox counter
                                   (index0 + i, step, attempt) of the stream (seed, purpose_name)
    valid(alpha, beta) -> bool array  normalisable: beta > 0, or beta = 0 and alpha > 0
"""
from __future__ import annotations

import numpy as np

from qftml import _core
from qftml.engine import rng


def _prepare(alpha, beta, j):
    j = np.asarray(j, dtype=np.float64)
    shape = j.shape
    units = shape[-1] if j.ndim else 1
    j2 = np.ascontiguousarray(j.reshape(-1, units))
    a = np.ascontiguousarray(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (units,)))
    b = np.ascontiguousarray(np.broadcast_to(np.asarray(beta, dtype=np.float64), (units,)))
    return a, b, j2, shape


def valid(alpha, beta):
    alpha, beta = np.asarray(alpha, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    return np.isfinite(alpha) & np.isfinite(beta) & ((beta > 0) | ((beta == 0) & (alpha > 0)))


def integral(alpha, beta, j):
    a, b, j2, shape = _prepare(alpha, beta, j)
    return tuple(x.reshape(shape) for x in _core.quartic_integral(a, b, j2))


def sample(alpha, beta, j, seed: int, purpose_name: str, index0: int = 0, step: int = 0):
    a, b, j2, shape = _prepare(alpha, beta, j)
    x, attempts = _core.quartic_sample(a, b, j2, int(seed), rng.purpose(purpose_name), int(index0),
                                       int(step) & 0xFFFFFFFF)
    return x.reshape(shape), attempts
