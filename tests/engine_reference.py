"""Plain-numpy reference implementations of the action and its observables (for tests only).

Independent of the C++ code: global arrays, np.roll for neighbours.
"""
import numpy as np


def neighbour(phi, offset):
    """phi_{x+e} as an array over x (periodic)."""
    return np.roll(phi, shift=[-e for e in offset], axis=tuple(range(phi.ndim)))


def action(phi, w, a, b, r, g=None, extra_offsets=()):
    d = phi.ndim
    S = np.sum(a * phi ** 2 + b * phi ** 4 + r * phi)
    for mu in range(d):
        e = [0] * d
        e[mu] = 1
        S -= np.sum(w[..., mu] * phi * neighbour(phi, e))
    for k, e in enumerate(extra_offsets):
        S -= np.sum(g[..., k] * phi * neighbour(phi, e))
    return S


def global_index_field(shape):
    return np.arange(int(np.prod(shape)), dtype=float).reshape(shape)


def random_couplings(shape, n_extra, seed, gaussian=False):
    """Inhomogeneous couplings that are safely normalisable (diagonally dominant if Gaussian)."""
    rng = np.random.default_rng(seed)
    d = len(shape)
    w = rng.uniform(0.2, 0.6, size=shape + (d,))
    g = rng.uniform(-0.2, 0.2, size=shape + (n_extra,))
    b = np.zeros(shape) if gaussian else rng.uniform(0.1, 0.4, size=shape)
    a = (rng.uniform(-0.5, 1.0, size=shape) if not gaussian
         else 2 * d * 0.6 + 0.4 * n_extra + rng.uniform(0.2, 0.5, size=shape))
    r = rng.uniform(-0.3, 0.3, size=shape)
    return {"w": w, "g": g, "a": a, "b": b, "r": r}
