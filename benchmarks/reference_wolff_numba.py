"""Numba-jitted embedded-Ising Wolff + checkerboard Metropolis for 2D phi^4: the single-core
reference of the cluster benchmark (bench_cluster.py).

Exports:
    NumbaWolff(w, a, b, r, step, seed, clusters=1, hits=1)
        .sweep(n)        n times: `hits` checkerboard Metropolis sweeps (reference_numba.py's kernel,
                         PCG64 uniforms in bulk), then `clusters` Wolff clusters; returns
                         (accepted Metropolis moves, sites in the clusters)
        .phi             the field (L0, L1)
    clusters_for_coverage(ref, coverage, sweeps) -> int   the fixed number of clusters per sweep
                         whose sizes add up to about coverage * V, from a pilot run of `ref`

The Wolff update (Brower and Tamayo, PRL 62, 1087 (1989); Wolff, PRL 62, 361 (1989)) as a
physicist writes it for this action: a random seed site; depth-first growth through the four
links of every added site, a link (x, y) outside the cluster bonded with
P = 1 - exp(-2 w_xy phi_x phi_y) when w_xy phi_x phi_y > 0, each link tested once; the cluster's
signs flip with probability min(1, exp(2 sum_C r phi)) (always for r = 0). Uniforms from numba's
generator inline (one per bond test). Arrays are preallocated; the cluster's marks are cleared by
walking its site list, so a small cluster costs its size, not V.
The number of clusters per sweep is fixed: growing clusters until their sizes reach V makes the
number of steps depend on the path and biases the chain (qftml's Wolff tests saw it); a pilot run
(clusters_for_coverage) chooses the number once, before the measured chain.
"""
from __future__ import annotations

import numba
import numpy as np

from reference_numba import NumbaMetropolis, _seed_numba


@numba.njit(cache=True, fastmath=False)
def _wolff(phi, homog, w, r, has_field, n_clusters, stack, cluster, mark):
    L0, L1 = phi.shape
    w0 = w[0, 0, 0]
    covered = 0
    for _ in range(n_clusters):
        s = np.random.randint(0, L0 * L1)
        i0, j0 = s // L1, s % L1
        mark[i0, j0] = True
        stack[0] = s
        top = 1
        size = 0
        rsum = 0.0
        while top > 0:
            top -= 1
            x = stack[top]
            cluster[size] = x
            size += 1
            i, j = x // L1, x % L1
            f = phi[i, j]
            if has_field:
                rsum += r[i, j] * f
            ip = i + 1 if i + 1 < L0 else 0
            im = i - 1 if i > 0 else L0 - 1
            jp = j + 1 if j + 1 < L1 else 0
            jm = j - 1 if j > 0 else L1 - 1
            for k in range(4):
                if k == 0:
                    ni, nj = ip, j
                    c = w0 if homog else w[i, j, 0]
                elif k == 1:
                    ni, nj = im, j
                    c = w0 if homog else w[im, j, 0]
                elif k == 2:
                    ni, nj = i, jp
                    c = w0 if homog else w[i, j, 1]
                else:
                    ni, nj = i, jm
                    c = w0 if homog else w[i, jm, 1]
                if mark[ni, nj]:
                    continue
                arg = 2.0 * c * f * phi[ni, nj]
                if arg > 0.0 and np.random.random() < 1.0 - np.exp(-arg):
                    mark[ni, nj] = True
                    stack[top] = ni * L1 + nj
                    top += 1
        flip = True
        if has_field and rsum < 0.0:
            flip = np.random.random() < np.exp(2.0 * rsum)
        for q in range(size):
            x = cluster[q]
            i, j = x // L1, x % L1
            mark[i, j] = False
            if flip:
                phi[i, j] = -phi[i, j]
        covered += size
    return covered


class NumbaWolff:
    """Metropolis sweeps + Wolff clusters on a periodic L0 x L1 lattice (global arrays as NumbaMetropolis)."""

    def __init__(self, w, a, b, r, step, seed=1, clusters=1, hits=1, phi=None):
        self.metropolis = NumbaMetropolis(w, a, b, r, step, seed=seed, phi=phi)
        self.hits = int(hits)
        self.clusters = int(clusters)
        m = self.metropolis
        L0, L1 = m.a.shape
        self.has_field = bool(np.any(m.r != 0.0))
        self.stack = np.empty(L0 * L1, dtype=np.int64)
        self.cluster = np.empty(L0 * L1, dtype=np.int64)
        self.mark = np.zeros((L0, L1), dtype=np.bool_)
        _seed_numba(seed)
        self.sweep(1)  # compile outside the timed region

    @property
    def phi(self):
        return self.metropolis.phi

    def sweep(self, n: int = 1):
        m = self.metropolis
        accepted = covered = 0
        for _ in range(n):
            accepted += m.sweep(self.hits)
            covered += _wolff(m.phi, m.homog, m.w, m.r, self.has_field, self.clusters, self.stack, self.cluster,
                              self.mark)
        return accepted, covered


def clusters_for_coverage(ref: NumbaWolff, coverage: float, sweeps: int = 200) -> int:
    """Clusters per sweep whose mean total size is coverage * V (pilot: `sweeps` sweeps of `ref` with
    one cluster each, which also thermalises it)."""
    saved = ref.clusters
    ref.clusters = 1
    _, covered = ref.sweep(sweeps)
    ref.clusters = saved
    return max(1, int(round(coverage * ref.phi.size / (covered / sweeps))))
