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
    make_communicators(comm, replicas)  -> Communicators(world, domain, cross, replica, replicas)
    Model(lattice, couplings, learn, tied, extra_offsets, field, b_floor)   learnable couplings of S
    random_couplings(lattice, seed, ranges, extra_offsets)  reproducible random local blocks
    GradientEstimator(model, target, comms, fisher=False)   accumulate Cov_p(S - A, dS/dtheta)
                                              (and the Fisher site / tied blocks) over samples
    GradientResult                            grads, mean_s_minus_a, series, timings, n,
                                              natural_grads(damping, mode) = G_block^-1 dF/dtheta
    Trainer(...) / EpochRecord                epochs of sample -> gradient -> optimiser step
                                              (optional natural gradient, element-wise step clipping)
    gather_global(lattice, local)             the global array on rank 0 (small volumes only)
    gamma_error(series_per_replica)           mean and Gamma-method error (pyerrors), replicas pooled
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field

import numpy as np
from mpi4py import MPI

from qftml.action import Action
from qftml.sampler import Sampler

FAMILIES = ("w", "g", "a", "b", "r")


# --------------------------------------------------------------------------- communicators
@dataclass
class Communicators:
    world: MPI.Comm
    domain: MPI.Comm       # the ranks of this replica: one domain-decomposed lattice
    replica: int           # this rank's replica index
    replicas: int
    cross: MPI.Comm | None = None  # same lattice block in every replica (set once the lattice exists)

    def connect(self, lattice) -> None:
        """Create `cross` from the lattice's block ownership (Cartesian rank)."""
        if self.cross is None:
            self.cross = self.world.Split(color=lattice.rank, key=self.replica)


def make_communicators(comm: MPI.Comm, replicas: int = 1) -> Communicators:
    """Split `comm` into `replicas` consecutive groups of equal size (error if R does not divide it)."""
    if replicas < 1 or comm.size % replicas:
        raise ValueError(f"--replicas {replicas} must be >= 1 and divide the number of ranks ({comm.size})")
    per = comm.size // replicas
    replica = comm.rank // per
    domain = comm.Split(color=replica, key=comm.rank) if replicas > 1 else comm
    return Communicators(world=comm, domain=domain, replica=replica, replicas=replicas)


# --------------------------------------------------------------------------- model couplings
def _family_shape(lattice, family, n_extra):
    if family == "w":
        return lattice.local_shape + (lattice.ndim,)
    if family == "g":
        return lattice.local_shape + (n_extra,)
    return lattice.local_shape


def random_couplings(lattice, seed: int, ranges: dict, extra_offsets=()) -> dict:
    """Local blocks of couplings drawn uniformly from ranges[family] = (lo, hi), or a constant.

    The global array is drawn from numpy's PCG64 seeded by (seed, family index) on every rank, so
    the couplings do not depend on the process grid (meant for volumes up to ~10^7 sites).
    """
    n_extra = len(extra_offsets)
    out = {}
    for i, fam in enumerate(FAMILIES):
        spec = ranges.get(fam, 0.0)
        if fam == "g" and n_extra == 0:
            continue
        if np.ndim(spec) == 0:
            out[fam] = float(spec)
            continue
        lo, hi = map(float, spec)
        gshape = tuple(lattice.shape) + ((lattice.ndim,) if fam == "w" else (n_extra,) if fam == "g" else ())
        arr = np.random.default_rng([seed, i]).uniform(lo, hi, size=gshape)
        out[fam] = lattice.local_block(arr)
    return out


class Model:
    """The couplings theta of S on this rank: learned families in `params`, the rest fixed.

    couplings: dict family -> scalar or local block (w: local_shape + (d,), g: + (n_extra,)).
    learn: families that are trained; tied: those among them shared by all sites/links (one scalar,
    initialised to the mean of the given values). b_floor > 0 projects b onto b >= b_floor after
    every update (normalisability); the number of projected couplings is kept in `projected`.
    """

    def __init__(self, lattice, couplings: dict, learn=("w", "a", "b"), tied=(), extra_offsets=(),
                 field: str = "real", b_floor: float = 0.0):
        self.lattice = lattice
        self.extra_offsets = [list(map(int, e)) for e in extra_offsets]
        self.field = field
        self.b_floor = float(b_floor)
        self.projected = 0
        n_extra = len(self.extra_offsets)
        bad = [f for f in list(learn) + list(tied) if f not in FAMILIES or (f == "g" and n_extra == 0)]
        if bad:
            raise ValueError(f"model families {bad} unknown or absent (families: w, a, b, r; g needs extra links)")
        if not set(tied) <= set(learn):
            raise ValueError(f"tied families {sorted(set(tied) - set(learn))} are not learned")
        self.learn = [f for f in FAMILIES if f in learn]
        self.tied = set(tied)
        self.params, self.fixed = {}, {}
        comm = lattice.comm
        for fam in FAMILIES:
            if fam == "g" and n_extra == 0:
                continue
            shape = _family_shape(lattice, fam, n_extra)
            value = np.asarray(couplings.get(fam, 0.0), dtype=float)
            if fam in self.tied:
                total = comm.allreduce(float(np.broadcast_to(value, shape).sum()))
                count = comm.allreduce(int(np.prod(shape)))
                self.params[fam] = np.array(total / count)
            elif fam in self.learn:
                self.params[fam] = np.ascontiguousarray(np.broadcast_to(value, shape)).copy()
            else:
                self.fixed[fam] = value.copy() if value.ndim else float(value)

    def shape(self, family):
        return _family_shape(self.lattice, family, len(self.extra_offsets))

    def local_couplings(self) -> dict:
        """Every family as a full local block (tied scalars broadcast)."""
        out = {}
        for fam in FAMILIES:
            if fam == "g" and not self.extra_offsets:
                continue
            v = self.params.get(fam, self.fixed.get(fam))
            out[fam] = np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=float), self.shape(fam)))
        return out

    def action(self) -> Action:
        """The engine action of the current couplings; ValueError if not normalisable."""
        c = self.local_couplings()
        return Action(self.lattice, c["w"], c["a"], c["b"], c["r"], g=c.get("g"),
                      extra_offsets=self.extra_offsets, field=self.field)

    def project(self) -> int:
        """Apply b >= b_floor to a learned b (if b_floor > 0); returns how many were moved (global)."""
        if self.b_floor <= 0 or "b" not in self.params:
            return 0
        b = self.params["b"]
        low = b < self.b_floor
        n = int(np.count_nonzero(low))
        b[low] = self.b_floor
        n = self.lattice.comm.allreduce(n if b.ndim else (n if self.lattice.comm.rank == 0 else 0))
        self.projected += n
        return n

    def stats(self) -> dict:
        """Per family (global): mean, std, min, max over every coupling of the family."""
        comm = self.lattice.comm
        out = {}
        for fam, v in self.local_couplings().items():
            s = np.array([v.sum(), (v * v).sum(), v.size], dtype=float)
            comm.Allreduce(MPI.IN_PLACE, s)
            lo = comm.allreduce(float(v.min()) if v.size else np.inf, op=MPI.MIN)
            hi = comm.allreduce(float(v.max()) if v.size else -np.inf, op=MPI.MAX)
            if s[2] == 0:
                continue
            mean = s[0] / s[2]
            out[fam] = {"mean": mean, "std": float(np.sqrt(max(s[1] / s[2] - mean * mean, 0.0))),
                        "min": lo, "max": hi}
        return out


# --------------------------------------------------------------------------- gradient
@dataclass
class GradientResult:
    grads: dict                 # family -> gradient (0-d for tied, local block otherwise)
    mean_s_minus_a: float       # <S - A>_p pooled over replicas
    var_s_minus_a: float
    n: int                      # samples pooled over replicas
    series: np.ndarray          # this replica's S - A per configuration (global values)
    timings: dict = dc_field(default_factory=dict)
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

    def natural_grads(self, damping: float = 1e-3, mode: str = "mean") -> dict:
        """Gradients preconditioned with the block-diagonal Fisher metric.

        The Hessian of F at its minimum is the Fisher metric G_ij = Cov_p(dS/dtheta_i, dS/dtheta_j).
        We keep its site blocks (all untied couplings living at site x: w[x, mu], g[x, l], a[x],
        b[x], r[x]) and the block of the tied families, and return G_block^-1 dF/dtheta; `damping`
        adds damping * (mean diagonal of the block) to the diagonal (mode "mean"), or damping * G_ii
        to each diagonal element (mode "diagonal", Levenberg-Marquardt). Purely local.
        """
        if self.fisher_site is None and self.fisher_tied is None:
            raise ValueError("natural gradients need GradientEstimator(..., fisher=True)")
        out = dict(self.grads)
        if self.site_families:
            g = np.concatenate([self.grads[f].reshape(self.fisher_site.shape[0], -1) for f, _ in self.site_families],
                               axis=1)
            out_site = _damped_solve(self.fisher_site, g, damping, mode)
            col = 0
            for fam, k in self.site_families:
                out[fam] = out_site[:, col:col + k].reshape(self.grads[fam].shape)
                col += k
        if self.tied_families:
            g = np.array([float(self.grads[f]) for f in self.tied_families])
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

    def __init__(self, model: Model, target: Action, comms: Communicators, batch_bytes: int = 64 << 20,
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
        self.target_couplings = {k: np.asarray(v) for k, v in target.couplings().items()}
        # (links of A that S lacks, e.g. nnn diagonals, read corner ghosts: the engine refreshes
        # them itself when A is evaluated on a field sampled with face-only exchanges)
        # if A's links are S's links (same order), A's local value uses S's densities: one call less
        a_extra = [tuple(e) for e in target.offsets[model.lattice.ndim:]]
        self.reuse_densities = not a_extra or a_extra == [tuple(e) for e in model.extra_offsets]
        if self.reuse_densities and not a_extra:
            self.target_couplings.pop("g", None)

    def begin(self, action_s: Action, shift: float = 0.0) -> None:
        self.action_s = action_s
        self.s_couplings = {k: np.asarray(v) for k, v in action_s.couplings().items()}
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

    @staticmethod
    def _local_value(couplings, dens):
        # S = sum_i theta_i dS/dtheta_i: S is linear in its couplings
        return sum(float(np.vdot(couplings[f], dens[f])) for f in FAMILIES if f in dens and f in couplings and dens[f].size)

    def add(self, field) -> None:
        t0 = time.perf_counter()
        dens = self.action_s.gradient_densities(field)
        s_loc = self._local_value(self.s_couplings, dens)
        a_dens = dens if self.reuse_densities else self.target.gradient_densities(field)
        a_loc = self._local_value(self.target_couplings, a_dens)
        row = self.buffer[self.k]
        for fam, tied, _, lo, hi in self.columns:
            row[lo:hi] = dens[fam].sum() if tied else dens[fam].ravel()
        self.local_d[self.k] = s_loc - a_loc
        self.k += 1
        self.t_grad += time.perf_counter() - t0
        if self.k == self.batch:
            self._flush()

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
        grads = {}
        for fam, tied, shape, lo, hi in self.columns:
            grads[fam] = np.array(cov[lo]) if tied else cov[lo:hi].reshape(shape)
        result = GradientResult(grads=grads, mean_s_minus_a=mean_d + self.shift,
                                var_s_minus_a=max(sum_d2 / n - mean_d * mean_d, 0.0), n=n,
                                series=np.asarray(self.series),
                                timings={"gradient": self.t_grad, "communication": self.t_comm},
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


# --------------------------------------------------------------------------- small-volume I/O helpers
def gather_global(lattice, local: np.ndarray, root: int = 0):
    """The global array assembled on `root` of lattice.comm from every rank's block (None elsewhere)."""
    local = np.asarray(local)
    parts = lattice.comm.gather((lattice.local_slices, local), root=root)
    if lattice.comm.rank != root:
        return None
    out = np.empty(tuple(lattice.shape) + local.shape[lattice.ndim:])
    for slices, block in parts:
        out[slices] = block
    return out


# --------------------------------------------------------------------------- training loop
@dataclass
class EpochRecord:
    epoch: int
    lr: float
    a_minus_s: float          # <A - S>_p
    a_minus_s_err: float      # naive error sqrt(var/n) (the F estimate uses the Gamma method)
    grad_norms: dict
    stats: dict               # coupling stats after the update
    acceptance: float
    timings: dict
    projected: int
    result: GradientResult | None = None
    clipped: int = 0          # couplings whose change was clipped to max_step this epoch


class Trainer:
    """Sample p, estimate dF/dtheta, update theta; one call of epoch() per epoch.

    Each replica's chain continues across epochs (a new Sampler with start="keep" on the same
    field; the global sweep counter is carried so random numbers never repeat).
    """

    def __init__(self, model: Model, target: Action, optimizer, comms: Communicators, seed: int,
                 samples: int, sweeps_between: int = 1, thermalize: int = 100,
                 thermalize_after_update: int = 0, algorithm: str = "metropolis", hits: int = 1,
                 step: float = 1.0, start: str = "hot", tune: bool = True, precondition: str = "none",
                 damping: float = 1e-3, max_step: float = 0.0, damping_mode: str = "mean"):
        if samples < 2:
            raise ValueError(f"training.samples must be >= 2, got {samples}")
        self.model, self.target, self.optimizer, self.comms = model, target, optimizer, comms
        comms.connect(model.lattice)
        self.seed = int(seed) + 104729 * comms.replica  # own RNG stream per replica
        self.samples, self.sweeps_between = int(samples), int(sweeps_between)
        self.thermalize, self.thermalize_after_update = int(thermalize), int(thermalize_after_update)
        self.algorithm, self.hits, self.step, self.start, self.tune = algorithm, int(hits), float(step), start, tune
        if precondition not in ("none", "fisher"):
            raise ValueError(f"training.precondition must be 'none' or 'fisher', got {precondition!r}")
        self.precondition, self.damping, self.damping_mode = precondition, float(damping), damping_mode
        self.max_step = float(max_step)  # > 0: clip every coupling's change per epoch (a trust region)
        self.clipped = 0
        self.estimator = GradientEstimator(model, target, comms, fisher=precondition == "fisher")
        self.field = None
        self.sweeps = 0
        self.epoch = 0
        self.shift = 0.0

    def current_action(self) -> Action:
        try:
            return self.model.action()
        except ValueError as e:
            raise ValueError(f"epoch {self.epoch}: the learned couplings left the normalisable region ({e}); "
                             "lower training.lr or set training.b_floor > 0") from None

    def run_epoch(self) -> EpochRecord:
        t0 = time.perf_counter()
        action = self.current_action()
        first = self.field is None
        sampler = Sampler(action, seed=self.seed, algorithm=self.algorithm, hits=self.hits, step=self.step,
                          start=self.start if first else "keep", field=self.field)
        if first:
            self.field = sampler.field
        sampler.sweep_index = self.sweeps
        n_therm = self.thermalize if first else self.thermalize_after_update
        if n_therm:
            sampler.thermalize(n_therm, tune=self.tune and self.algorithm == "metropolis")
        sampler.reset_counters()
        self.estimator.begin(action, self.shift)
        for _ in range(self.samples):
            sampler.sweep(self.sweeps_between)
            self.estimator.add(self.field)
        acc = sampler.acceptance()
        if self.comms.replicas > 1:
            acc = self.comms.cross.allreduce(acc) / self.comms.replicas
        self.step, self.sweeps = sampler.step, sampler.sweep_index
        result = self.estimator.finish()
        self.shift = result.mean_s_minus_a
        lr = self.optimizer.lr()
        norms = result.norms(self.model.lattice.comm)
        grads = result.natural_grads(self.damping, self.damping_mode) if self.precondition == "fisher" else result.grads
        old = {k: v.copy() for k, v in self.model.params.items()} if self.max_step > 0 else None
        self.optimizer.step(self.model.params, grads)
        clipped_before = self.clipped
        if old is not None:
            # element-wise, hence local and independent of the process grid
            for k, v in self.model.params.items():
                delta = v - old[k]
                big = np.abs(delta) > self.max_step
                if np.any(big):
                    v[...] = old[k] + np.clip(delta, -self.max_step, self.max_step)
                self.clipped += int(np.count_nonzero(big))
        projected = self.model.project()
        self.epoch += 1
        total = time.perf_counter() - t0
        timings = dict(result.timings)
        timings["total"] = total
        timings["sampling"] = total - timings["gradient"] - timings["communication"]
        return EpochRecord(epoch=self.epoch - 1, lr=lr, a_minus_s=-result.mean_s_minus_a,
                           a_minus_s_err=float(np.sqrt(result.var_s_minus_a / result.n)), grad_norms=norms,
                           stats=self.model.stats(), acceptance=acc, timings=timings, projected=projected,
                           result=result, clipped=self.model.lattice.comm.allreduce(self.clipped - clipped_before))


def gamma_error(series_per_replica, name="A_minus_S"):
    """Mean and autocorrelation-aware error (pyerrors Gamma method) of a series given per replica."""
    import pyerrors as pe

    series = [np.asarray(s, dtype=float) for s in series_per_replica if len(s)]
    if all(np.ptp(s) == 0 for s in series):
        return float(np.mean(np.concatenate(series))), 0.0
    names = [f"{name}|r{i}" for i in range(len(series))] if len(series) > 1 else [name]
    obs = pe.Obs(series, names)
    obs.gamma_method()
    return float(obs.value), float(obs.dvalue)
