"""Learning an action by minimising the variational free energy (DESIGN 1.3).

Model p = exp(-S(phi; theta))/Z_S, target q = exp(-A)/Z_A. Since KL(p||q) >= 0,

    F_A <= F(theta) = <A - S>_p + F_S,        F_X = -ln Z_X,
    dF/dtheta_i = Cov_p(S - A, dS/dtheta_i)
               = <(S - A) dS/dtheta_i> - <S - A><dS/dtheta_i>,

only samples of p are needed. S is linear in its couplings, S = sum_i theta_i dS/dtheta_i, so the
local parts of S and A come from the engine's gradient densities; one small allreduce per batch of
configurations makes them global, and each rank forms the covariance for the couplings it owns.
A tied family (one coupling shared by every site / link) has dS/dtheta = sum_x of the densities;
its covariance is linear in the local sums, so those are reduced once per epoch.

Two levels of parallelism: R replicas (independent chains, own RNG streams) x domains (each replica
a domain-decomposed lattice). make_communicators() splits the ranks; the gradient pools every
replica's samples: the sums of (S - A - c) dS/dtheta, dS/dtheta, (S - A - c) and the counts are
summed over replicas with one allreduce (c: a common shift, the previous epoch's mean, for
numerical stability), which equals the single-chain covariance of the concatenated samples.

Exports:
    GradientEstimator(model, target, comms, fisher=False)   accumulate Cov_p(S - A, dS/dtheta)
                                              (and the Fisher site / tied blocks) over samples;
                                              target None: only <dS/dtheta>_p and the Fisher blocks
                                              (`qftml fit`, DESIGN 1.5)
    GradientResult                            grads, means (<dS/dtheta>_p), mean_s_minus_a, series,
                                              timings, n, natural_grads(damping, mode) = G_block^-1 g
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field

import numpy as np
from mpi4py import MPI

from qftml.collective import Communicators
from qftml.engine.action import Action
from qftml.learning.model import Model


@dataclass
class GradientResult:
    grads: dict                 # family -> gradient (0-d for tied, local block otherwise)
    mean_s_minus_a: float       # <S - A>_p pooled over replicas
    var_s_minus_a: float
    n: int                      # samples pooled over replicas
    series: np.ndarray          # this replica's S - A per configuration (global values)
    timings: dict = dc_field(default_factory=dict)
    means: dict = dc_field(default_factory=dict)  # family -> <dS/dtheta>_p (0-d for tied: global sum)
    fisher_site: np.ndarray | None = None   # (local sites, k, k): Cov of the untied densities at a site
    fisher_tied: np.ndarray | None = None   # (k_t, k_t): Cov of the tied families' global sums
    site_families: list = dc_field(default_factory=list)   # [(family, number of columns)]
    tied_families: list = dc_field(default_factory=list)

    def norms(self, comm) -> dict:
        """Global Euclidean norm of each family's gradient (comm: the domain communicator)."""
        out = {}
        for fam, g in self.grads.items():
            sq = float(np.sum(g * g))
            out[fam] = float(np.sqrt(sq if g.ndim == 0 else comm.allreduce(sq)))
        return out

    def natural_grads(self, damping: float = 1e-3, mode: str = "mean", grads: dict | None = None) -> dict:
        """Gradients (`grads`, default self.grads) preconditioned with the block-diagonal Fisher metric.

        The Hessian of F at its minimum is the Fisher metric G_ij = Cov_p(dS/dtheta_i, dS/dtheta_j).
        We keep its site blocks (all untied couplings living at site x: w[x, mu], g[x, l], a[x],
        b[x], r[x]) and the block of the tied families, and return G_block^-1 dF/dtheta; `damping`
        adds damping * (mean diagonal of the block) to the diagonal (mode "mean"), or damping * G_ii
        to each diagonal element (mode "diagonal", Levenberg-Marquardt). Purely local.
        """
        if self.fisher_site is None and self.fisher_tied is None:
            raise ValueError("natural gradients need GradientEstimator(..., fisher=True)")
        grads = self.grads if grads is None else grads
        out = dict(grads)
        if self.site_families:
            g = np.concatenate([grads[f].reshape(self.fisher_site.shape[0], -1) for f, _ in self.site_families],
                               axis=1)
            out_site = _damped_solve(self.fisher_site, g, damping, mode)
            col = 0
            for fam, k in self.site_families:
                out[fam] = out_site[:, col:col + k].reshape(grads[fam].shape)
                col += k
        if self.tied_families:
            g = np.array([float(grads[f]) for f in self.tied_families])
            sol = _damped_solve(self.fisher_tied[None], g[None], damping, mode)[0]
            for i, fam in enumerate(self.tied_families):
                out[fam] = np.array(sol[i])
        return out


def _damped_solve(mats, rhs, damping, mode="mean"):
    """Solve (M + D) x = b for a stack of small symmetric matrices M, with the damping
    D = damping * mean(diag M) * 1 ("mean") or D = damping * diag(M) ("diagonal", Levenberg-Marquardt,
    invariant under rescaling single couplings, whose densities phi phi, phi^2, phi^4 differ widely)."""
    k = mats.shape[-1]
    diag = np.diagonal(mats, axis1=1, axis2=2)
    if mode == "mean":
        scale = diag.sum(axis=1) / k
        d = np.repeat(np.where(scale > 0, scale, 1.0)[:, None], k, axis=1)
    elif mode == "diagonal":
        d = np.maximum(diag, np.maximum(diag.max(axis=1, keepdims=True), 1e-300) * 1e-12)
    else:
        raise ValueError(f"damping mode must be 'mean' or 'diagonal', got {mode!r}")
    m = mats + np.einsum("vi,ij->vij", damping * d, np.eye(k))
    return np.linalg.solve(m, rhs[..., None])[..., 0]


class GradientEstimator:
    """Accumulates Cov_p(S - A, dS/dtheta) for the learned families of `model`.

    begin(action_s, shift) -> add(field) per configuration -> finish() -> GradientResult.
    Per configuration: the densities of S (learned families: local blocks, tied: their local sums)
    go into a buffer of `batch` rows; at a full buffer the local S - A of its rows (and, with
    `fisher`, the tied local sums) are made global with one allreduce and folded into running sums.
    With `fisher` the site blocks of Cov_p(dS/dtheta) are accumulated too (natural gradients).
    """

    def __init__(self, model: Model, target: Action | None, comms: Communicators, batch_bytes: int = 64 << 20,
                 fisher: bool = False):
        self.model, self.target, self.comms, self.fisher = model, target, comms, fisher
        self.domain = model.lattice.comm
        self.columns = []  # (family, tied, shape, start, stop)
        start = 0
        for fam in model.learn:
            shape = model.shape(fam)
            size = 1 if fam in model.tied else int(np.prod(shape))
            self.columns.append((fam, fam in model.tied, shape, start, start + size))
            start += size
        self.width = start
        self.tied_cols = [lo for fam, tied, _, lo, hi in self.columns if tied]
        self.tied_families = [fam for fam, tied, *_ in self.columns if tied]
        self.site_families = [(fam, int(np.prod(shape[model.lattice.ndim:])))
                              for fam, tied, shape, *_ in self.columns if not tied]
        self.n_sites = model.lattice.local_volume
        self.batch = max(1, min(1024, batch_bytes // (8 * max(self.width, 1))))
        # the engine's fused pass fills one buffer row per configuration (Action.density_row)
        self.density_columns = [(fam, tied, lo) for fam, tied, _, lo, _ in self.columns]

    def begin(self, action_s: Action, shift: float = 0.0) -> None:
        self.action_s = action_s
        self.shift = float(shift)
        self.buffer = np.empty((self.batch, self.width))
        self.local_d = np.empty(self.batch)
        self.k = 0
        self.sum_d_row = np.zeros(self.width)
        self.sum_row = np.zeros(self.width)
        self.sum_d = self.sum_d2 = 0.0
        self.n = 0
        self.series = []
        self.t_grad = self.t_comm = 0.0
        k_site = sum(k for _, k in self.site_families)
        self.sum_site_outer = np.zeros((self.n_sites, k_site, k_site)) if self.fisher else None
        self.sum_tied_outer = np.zeros((len(self.tied_cols),) * 2) if self.fisher else None
        self.sum_tied = np.zeros(len(self.tied_cols))

    def add(self, field) -> None:
        t0 = time.perf_counter()
        self.local_d[self.k] = self._fill_row(field, self.buffer[self.k])
        self.k += 1
        self.t_grad += time.perf_counter() - t0
        if self.k == self.batch:
            self._flush()

    def _fill_row(self, field, row) -> float:
        """The learned densities of S of one configuration into `row` (tied: local sums) and the
        local value of S - A (0 without a target): one pass of the engine over the field for S (no
        arrays allocated), one for the local value of A."""
        s_loc = self.action_s.density_row(field, self.density_columns, row)
        return 0.0 if self.target is None else s_loc - self.target.local_action(field)

    def _flush(self) -> None:
        if self.k == 0:
            return
        t0 = time.perf_counter()
        rows = self.buffer[:self.k]
        nt = len(self.tied_cols) if self.fisher else 0
        # one allreduce per batch: global S - A (and global tied sums for the Fisher block)
        packed = np.concatenate([self.local_d[:self.k, None], rows[:, self.tied_cols[:nt]]], axis=1)
        self.domain.Allreduce(MPI.IN_PLACE, packed)
        d = packed[:, 0]
        t1 = time.perf_counter()
        self.series.extend(d.tolist())
        dc = d - self.shift
        self.sum_d_row += dc @ rows
        self.sum_row += rows.sum(axis=0)
        self.sum_d += float(dc.sum())
        self.sum_d2 += float(dc @ dc)
        self.n += self.k
        if self.fisher:
            if self.site_families:
                site = np.concatenate([rows[:, lo:hi].reshape(self.k, self.n_sites, -1)
                                       for fam, tied, _, lo, hi in self.columns if not tied], axis=2)
                self.sum_site_outer += np.einsum("nvi,nvj->vij", site, site)
            if nt:
                tied_global = packed[:, 1:]
                self.sum_tied_outer += tied_global.T @ tied_global
                self.sum_tied += tied_global.sum(axis=0)
        self.k = 0
        self.t_comm += t1 - t0
        self.t_grad += time.perf_counter() - t1

    def finish(self) -> GradientResult:
        self._flush()
        t0 = time.perf_counter()
        tied_cols = self.tied_cols
        if tied_cols:  # tied columns hold local sums: make them global sums over the domain
            v = np.concatenate([self.sum_d_row[tied_cols], self.sum_row[tied_cols]])
            self.domain.Allreduce(MPI.IN_PLACE, v)
            self.sum_d_row[tied_cols], self.sum_row[tied_cols] = v[:len(tied_cols)], v[len(tied_cols):]
        parts = [self.sum_d_row, self.sum_row, [self.sum_d, self.sum_d2, self.n]]
        if self.fisher:
            parts += [self.sum_site_outer.ravel(), self.sum_tied_outer.ravel(), self.sum_tied]
        packed = np.concatenate([np.ravel(p) for p in parts])
        if self.comms.replicas > 1:
            self.comms.cross.Allreduce(MPI.IN_PLACE, packed)  # pool every replica's samples
        w = self.width
        sum_d_row, sum_row = packed[:w], packed[w:2 * w]
        sum_d, sum_d2, n = packed[2 * w], packed[2 * w + 1], int(round(packed[2 * w + 2]))
        self.t_comm += time.perf_counter() - t0
        mean_d = sum_d / n
        mean_row = sum_row / n
        cov = sum_d_row / n - mean_d * mean_row
        grads, means = {}, {}
        for fam, tied, shape, lo, hi in self.columns:
            grads[fam] = np.array(cov[lo]) if tied else cov[lo:hi].reshape(shape)
            means[fam] = np.array(mean_row[lo]) if tied else mean_row[lo:hi].reshape(shape)
        result = GradientResult(grads=grads, mean_s_minus_a=mean_d + self.shift,
                                var_s_minus_a=max(sum_d2 / n - mean_d * mean_d, 0.0), n=n,
                                series=np.asarray(self.series),
                                timings={"gradient": self.t_grad, "communication": self.t_comm}, means=means,
                                site_families=list(self.site_families), tied_families=list(self.tied_families))
        if self.fisher:
            off = 2 * w + 3
            size = self.sum_site_outer.size
            site_outer = packed[off:off + size].reshape(self.sum_site_outer.shape) / n
            off += size
            nt = len(tied_cols)
            tied_outer = packed[off:off + nt * nt].reshape(nt, nt) / n
            tied_mean = packed[off + nt * nt:] / n
            site_mean = np.concatenate([mean_row[lo:hi].reshape(self.n_sites, -1)
                                        for fam, tied, _, lo, hi in self.columns if not tied], axis=1) \
                if self.site_families else np.zeros((self.n_sites, 0))
            result.fisher_site = site_outer - site_mean[:, :, None] * site_mean[:, None, :]
            result.fisher_tied = tied_outer - np.outer(tied_mean, tied_mean)
        return result
