"""Vectorised NumPy checkerboard Metropolis for the 2D phi^4 action: a reference of `make bench`.

Exports:
    NumpyMetropolis(w, a, b, r, step, seed)   .sweep(n) -> accepted count

The same action, proposal and acceptance as reference_numba.py and the engine (DESIGN 1.1):
    J = sum_mu (w[x,mu] phi_{x+mu} + w[x-mu,mu] phi_{x-mu}),
    dS = (phi' - phi)(r - J) + a (phi'^2 - phi^2) + b (phi'^4 - phi^4),  accept if u < exp(-dS).
Whole-lattice array operations per parity: neighbours by np.roll, every site computed and the
sites of the other parity masked out (the usual NumPy idiom; no Python loop over sites).
"""
from __future__ import annotations

import numpy as np


class NumpyMetropolis:
    def __init__(self, w, a, b, r, step, seed=1, phi=None):
        w = np.asarray(w, dtype=np.float64)
        self.a, self.b, self.r = (np.asarray(x, dtype=np.float64) for x in (a, b, r))
        L0, L1 = self.a.shape
        self.w_fw0, self.w_fw1 = w[..., 0].copy(), w[..., 1].copy()  # link (x, x+mu) at x
        self.w_bw0 = np.roll(w[..., 0], 1, axis=0)                   # link (x-mu, x) at x-mu
        self.w_bw1 = np.roll(w[..., 1], 1, axis=1)
        i, j = np.indices((L0, L1))
        self.masks = [((i + j) % 2) == p for p in range(2)]
        self.step = float(step)
        self.rng = np.random.default_rng(seed)
        self.phi = self.rng.uniform(-1, 1, (L0, L1)) if phi is None else np.array(phi, dtype=np.float64)

    def sweep(self, n: int = 1) -> int:
        accepted = 0
        phi = self.phi
        for _ in range(n):
            for mask in self.masks:
                J = (self.w_fw0 * np.roll(phi, -1, axis=0) + self.w_bw0 * np.roll(phi, 1, axis=0)
                     + self.w_fw1 * np.roll(phi, -1, axis=1) + self.w_bw1 * np.roll(phi, 1, axis=1))
                trial = phi + self.step * (2.0 * self.rng.random(phi.shape) - 1.0)
                o2, t2 = phi * phi, trial * trial
                dS = (trial - phi) * (self.r - J) + self.a * (t2 - o2) + self.b * (t2 * t2 - o2 * o2)
                with np.errstate(over="ignore"):
                    accept = mask & (self.rng.random(phi.shape) < np.exp(-dS))
                np.copyto(phi, trial, where=accept)
                accepted += int(np.count_nonzero(accept))
        return accepted
