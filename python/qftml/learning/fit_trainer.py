"""The training loop of `qftml fit`: maximum likelihood of data, i.e. minimum KL(q||p) (DESIGN 1.5).

Per epoch: the data term <dS/dtheta>_data (full batch: computed once; mini-batch: the rows selected
for this epoch), the model term <dS/dtheta>_p from persistent chains (PCD; CD-k as an option: the
chains restart from data rows and run k sweeps), the gradient of the negative log-likelihood
    g_i = <D_i>_data - <D_i>_p + l2 (theta_i - c_i)
(c = 0, or the family's mean with l2_center = "mean": a pull towards homogeneous couplings), an
update with the optimisers of `learn` (optionally the natural gradient G^-1 g with the model's
Fisher blocks G = Cov_p(dS/dtheta), the Hessian of the negative log-likelihood), and the
normalisability guard of `learn` (trust region max_step, b >= b_floor, a clear error otherwise).
Moment residuals (data minus model per-site moments, and in units of their combined error) every
epoch. The log-likelihood per site, (-<S>_data + F_S) / V with F_S = -ln Z by the thermodynamic
integration of qftml.learning.free_energy, on training and held-out rows at chosen epochs.

Random streams: chains derive_seed(seed, "fit_chain", replica) (PCD and CD alike; the sweep counter
never goes back, so no random number repeats); the mini-batch of epoch e: configuration i belongs
to it iff uniform(seed, "fit_batch", i, e) < batch / n_train; TI node k of the estimate at epoch e
derive_seed(seed, "ti_node", e, k).

Exports:
    FitTrainer(model, optimizer, comms, data, ...)   .run_epoch() -> FitEpoch, .log_likelihood(...),
                                                 .checkpoint_contents() / .restore(ckpt)
    ContrastiveChain                             CD-k with PersistentChain's interface
    FitEpoch                                     what one epoch measured
    Likelihood                                   one log-likelihood estimate (train, held-out)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field, replace

import numpy as np

from qftml.engine.lattice import Field
from qftml.engine.rng import derive_seed
from qftml.engine.sampler import Sampler
from qftml.learning.chains import PersistentChain
from qftml.learning.data_statistics import MOMENT_NAMES, action_values, data_moments, moments_of_measure
from qftml.learning.gradient import GradientEstimator
from qftml.learning.trainer import model_arrays, load_model_arrays, normalisable_action, update_couplings


class ContrastiveChain:
    """CD-k: every sample starts from a data row of this replica's shard and runs k sweeps.
    Rows are used cyclically (epoch after epoch); the sweep counter continues, so the random numbers
    never repeat. Same interface as PersistentChain (run, state, restore, field, sweeps)."""

    def __init__(self, comms, seed, shard, algorithm="metropolis", hits=1, step=1.0, cluster="none",
                 cluster_every=1):
        self.comms, self.shard = comms, shard
        self.seed = derive_seed(seed, "fit_chain", comms.replica)
        self.algorithm, self.hits, self.step = algorithm, int(hits), float(step)
        self.cluster, self.cluster_every = cluster, int(cluster_every)
        self.field, self.sweeps, self.next_row = None, 0, 0

    def run(self, action, samples, sweeps_between, each) -> float:
        if self.field is None:
            self.field = Field(action.lattice)
        sampler = Sampler(action, seed=self.seed, algorithm=self.algorithm, hits=self.hits, step=self.step,
                          start="keep", field=self.field, cluster=self.cluster, cluster_every=self.cluster_every)
        sampler.sweep_index = self.sweeps
        sampler.reset_counters()
        for _ in range(samples):
            self.field.local = self.shard[self.next_row % len(self.shard)]
            self.next_row += 1
            sampler.sweep(sweeps_between)
            each(self.field)
        acc = sampler.acceptance()
        if self.comms.replicas > 1:
            acc = self.comms.cross.allreduce(acc) / self.comms.replicas
        self.sweeps = sampler.sweep_index
        return acc

    def state(self) -> dict:
        return {"sweeps": int(self.sweeps), "step": float(self.step), "next_row": int(self.next_row)}

    def restore(self, local_block, lattice, state) -> None:
        self.field = Field(lattice)
        self.field.local = local_block
        self.sweeps, self.step, self.next_row = int(state["sweeps"]), float(state["step"]), int(state["next_row"])


@dataclass
class FitEpoch:
    epoch: int
    lr: float
    acceptance: float
    grad_norms: dict
    stats: dict
    residual: np.ndarray        # data - model per-site moments (MOMENT_NAMES)
    residual_z: np.ndarray      # in units of the combined error
    model_moments: np.ndarray
    model_moments_err: np.ndarray
    n_data: int
    timings: dict
    projected: int = 0
    clipped: int = 0
    result: object = None       # the GradientResult of the model term (Fisher blocks, means)


@dataclass
class Likelihood:
    epoch: int
    train: float
    train_err: float
    holdout: float = np.nan
    holdout_err: float = np.nan
    f_s: float = np.nan
    f_s_err: float = np.nan
    s_train: float = np.nan       # <S>_data / V
    s_train_err: float = np.nan
    s_holdout: float = np.nan
    s_holdout_err: float = np.nan
    extra: dict = dc_field(default_factory=dict)

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("epoch", "train", "train_err", "holdout", "holdout_err", "f_s",
                                              "f_s_err", "s_train", "s_train_err", "s_holdout", "s_holdout_err")}


class FitTrainer:
    """Maximum-likelihood training of `model` on sharded data (qftml.io.datasets).

    data: {"train": (rows, block), "holdout": (rows, block)} of this rank (its replica's rows, its
    lattice block). sampler: the [sampler] keys (algorithm, thermalize, hits, step, start, cluster,
    cluster_every, seed). method "pcd" | "cd" (cd_k sweeps from data rows). batch: 0 (full batch) or
    the expected number of training rows per epoch.
    """

    def __init__(self, model, optimizer, comms, data, sampler: dict, samples: int, sweeps_between: int = 1,
                 thermalize_after_update: int = 0, method: str = "pcd", cd_k: int = 1, batch: int = 0,
                 l2: float = 0.0, l2_center: str = "zero", precondition: str = "none", damping: float = 0.1,
                 damping_mode: str = "mean", max_step: float = 0.0):
        self.model, self.optimizer, self.comms = model, optimizer, comms
        comms.connect(model.lattice)
        self.data = data
        self.seed = int(sampler["seed"])
        self.samples, self.sweeps_between = int(samples), int(sweeps_between)
        self.method, self.batch = method, int(batch)
        self.l2, self.l2_center = float(l2), l2_center
        self.precondition, self.damping, self.damping_mode = precondition, float(damping), damping_mode
        self.max_step = float(max_step)
        s = sampler
        if method == "cd":
            self.chain = ContrastiveChain(comms, s["seed"], data["train"][1], s["algorithm"], s["hits"], s["step"],
                                          s["cluster"], s["cluster_every"])
            self.sweeps_between = int(cd_k)
        else:
            self.chain = PersistentChain(comms, s["seed"], "fit_chain", algorithm=s["algorithm"], hits=s["hits"],
                                         step=s["step"], start=s["start"], thermalize=s["thermalize"],
                                         thermalize_after_update=thermalize_after_update,
                                         cluster=s["cluster"], cluster_every=s["cluster_every"])
        self.estimator = GradientEstimator(model, None, comms, fisher=True)
        self.n_train = comms.world.allreduce(len(data["train"][0]) if model.lattice.comm.rank == 0 else 0)
        self.epoch = 0
        self.full = None   # full-batch data moments, computed once
        self.last_mean_phi = None

    # ------------------------------------------------------------------ data term
    def data_term(self, epoch):
        rows, block = self.data["train"]
        if self.batch == 0 or self.batch >= self.n_train:
            if self.full is None:
                self.full = data_moments(self.model, block, rows, self.comms)
                self.full_time = (self.full.seconds, self.full.comm_seconds)
                return self.full
            return replace(self.full, seconds=0.0, comm_seconds=0.0)
        from qftml.engine import rng

        p = self.batch / self.n_train
        for attempt in range(100):   # an empty mini-batch is drawn again (stream c3 = attempt)
            select = rng.uniform(self.seed, "fit_batch", np.asarray(rows, dtype=np.uint64), epoch, attempt) < p
            if self.comms.world.allreduce(int(select.sum())) > 0:
                return data_moments(self.model, block, rows, self.comms, select=select)
        raise ValueError(f"training.batch = {self.batch}: no data row selected in 100 draws")

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self) -> FitEpoch:
        from qftml.stats.errors import column_errors

        t0 = time.perf_counter()
        model, lat = self.model, self.model.lattice
        action = normalisable_action(model, self.epoch)
        data = self.data_term(self.epoch)
        t_data = time.perf_counter() - t0
        series = []
        collect = self.epoch_hook()

        def each(field):
            self.estimator.add(field)
            from qftml.engine.observables import measure
            series.append(moments_of_measure(measure(field, action), lat.volume))
            if collect is not None:
                collect(field)

        self.estimator.begin(action)
        t1 = time.perf_counter()
        acc = self.chain.run(action, self.samples, self.sweeps_between, each)
        t_chain = time.perf_counter() - t1
        result = self.estimator.finish()
        t2 = time.perf_counter()
        series = np.asarray(series)
        reps = self.comms.cross.allgather(series) if self.comms.replicas > 1 else [series]
        t_comm_mom = time.perf_counter() - t2
        pooled = np.concatenate(reps)
        m_mean = pooled.mean(axis=0)
        m_err = column_errors(pooled, [len(r) for r in reps], "model_moments")[0]
        resid = data.moments - m_mean
        scale = np.hypot(m_err, np.nan_to_num(data.moments_err))
        resid_z = np.divide(resid, scale, out=np.full_like(resid, np.nan), where=scale > 0)
        grads = {}
        for fam in model.learn:
            g = np.asarray(data.means[fam] - result.means[fam], dtype=float)
            if self.l2 > 0:
                theta = np.asarray(model.params[fam], dtype=float)
                center = 0.0
                if self.l2_center == "mean" and fam not in model.tied:
                    center = lat.comm.allreduce(float(theta.sum())) / lat.comm.allreduce(theta.size)
                g = g + self.l2 * (theta - center)
            grads[fam] = g
        result = replace(result, grads=grads)
        norms = result.norms(lat.comm)
        step = result.natural_grads(self.damping, self.damping_mode) if self.precondition == "fisher" else grads
        lr = self.optimizer.lr()
        clipped, projected = update_couplings(model, self.optimizer, step, self.max_step)
        self.epoch += 1
        total = time.perf_counter() - t0
        t_grad = result.timings["gradient"]
        t_comm = result.timings["communication"] + data.comm_seconds + t_comm_mom
        timings = {"data": data.seconds, "sampling": t_chain - t_grad - result.timings["communication"],
                   "gradient": t_grad + (total - t_data - t_chain - t_comm_mom), "communication": t_comm,
                   "total": total}
        return FitEpoch(epoch=self.epoch - 1, lr=lr, acceptance=acc, grad_norms=norms, stats=model.stats(),
                        residual=resid, residual_z=resid_z, model_moments=m_mean, model_moments_err=m_err,
                        n_data=data.n, timings=timings, projected=projected,
                        clipped=lat.comm.allreduce(clipped), result=result)

    def epoch_hook(self):
        """Called per model sample of this epoch when `want_mean_phi` is set: sums phi for <phi>_p."""
        if not getattr(self, "want_mean_phi", False):
            return None
        acc = {"sum": np.zeros(self.model.lattice.local_shape), "n": 0}
        self.last_mean_phi = acc

        def collect(field):
            acc["sum"] += field.local
            acc["n"] += 1
        return collect

    def moment_names(self):
        return MOMENT_NAMES(self.model.lattice.ndim, len(self.model.extra_offsets))

    # ------------------------------------------------------------------ the objective
    def log_likelihood(self, epoch, ti: dict, couplings=None) -> Likelihood:
        """(-<S>_rows + F_S) / V for the training and held-out rows at the current couplings;
        F_S by thermodynamic integration (ti: nodes, samples, thermalize, sweeps_between,
        algorithm, hits, cluster, cluster_every), stream `epoch`."""
        from qftml.learning.free_energy import free_energy_ti

        model, lat = self.model, self.model.lattice
        action = normalisable_action(model, epoch)
        fe = free_energy_ti(lat, couplings or model.local_couplings(), extra_offsets=model.extra_offsets,
                            field=model.field, comms=self.comms, seed=self.seed, stream=epoch, **ti)
        out = Likelihood(epoch=epoch, train=np.nan, train_err=np.nan, f_s=fe.value, f_s_err=fe.error)
        V = lat.volume
        for name in ("train", "holdout"):
            s_mean, s_err = self._mean_action(action, *self.data[name], name)
            if s_mean is None:
                continue
            setattr(out, f"s_{name}", s_mean / V)
            setattr(out, f"s_{name}_err", s_err / V)
            setattr(out, name, (-s_mean + fe.value) / V)
            setattr(out, f"{name}_err", float(np.hypot(s_err, fe.error)) / V)
        return out

    def _mean_action(self, action, rows, block, name):
        from qftml.stats.errors import mean_error

        vals = action_values(action, block, self.comms)
        parts = self.comms.cross.allgather((np.asarray(rows), vals)) if self.comms.replicas > 1 else [(rows, vals)]
        order = np.concatenate([p[0] for p in parts])
        if order.size == 0:
            return None, None
        series = np.concatenate([p[1] for p in parts])[np.argsort(order, kind="stable")]
        if series.size == 1:
            return float(series[0]), 0.0
        return mean_error(series, f"S_{name}")

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_contents(self):
        # "shift": the field of learn's trainer state that resume_trainer checks (fit has no shift)
        return (self.chain.field, {"epoch": self.epoch, "shift": 0.0}, self.chain.state(),
                model_arrays(self.model, self.optimizer))

    def restore(self, ckpt) -> None:
        load_model_arrays(self.model, self.optimizer, ckpt.arrays)
        self.chain.restore(ckpt.field, self.model.lattice, ckpt.replica_state)
        self.epoch = int(ckpt.state["epoch"])


__all__ = ["FitTrainer", "ContrastiveChain", "FitEpoch", "Likelihood"]
