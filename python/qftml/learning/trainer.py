"""The training loop of `qftml learn`: sample p, estimate dF/dtheta, update theta (DESIGN 1.3).

Exports:
    Trainer(model, target, optimizer, comms, seed, samples, ...)   .run_epoch() -> EpochRecord
                                              (optional natural gradient, element-wise step clipping)
    EpochRecord                               what one epoch measured
    gather_global(lattice, local)             the global array on rank 0 (small volumes only)
    gamma_error(series_per_replica)           mean and Gamma-method error (pyerrors), replicas pooled
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from qftml.collective import Communicators
from qftml.engine.action import Action
from qftml.engine.sampler import Sampler
from qftml.learning.gradient import GradientEstimator, GradientResult
from qftml.learning.model import Model


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
