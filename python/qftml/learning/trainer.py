"""The training loop of `qftml learn`: sample p, estimate dF/dtheta, update theta (DESIGN 1.3).

Exports:
    Trainer(model, target, optimizer, comms, seed, samples, ...)   .run_epoch() -> EpochRecord
                                              (optional natural gradient, element-wise step clipping);
                                              .checkpoint_contents() / .restore(TrainerCheckpoint)
    EpochRecord                               what one epoch measured
    normalisable_action(model, epoch)         model.action(), or ValueError naming the epoch and the fix
    update_couplings(model, optimizer, grads, max_step) -> (clipped, projected)   one optimiser step,
                                              the trust region |delta theta| <= max_step (0: off) and
                                              the b floor: the normalisability guard (local counts)
    model_arrays(model, optimizer) -> dict    learned couplings and optimiser state for a checkpoint
    load_model_arrays(model, optimizer, arrays)   their inverse
    gather_global(lattice, local)             the global array on rank 0 (tests, small volumes only)
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from qftml.collective import Communicators
from qftml.engine.action import Action
from qftml.learning.chains import PersistentChain
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


def normalisable_action(model: Model, epoch: int) -> Action:
    try:
        return model.action()
    except ValueError as e:
        raise ValueError(f"epoch {epoch}: the learned couplings left the normalisable region ({e}); "
                         "lower training.lr, set training.max_step > 0 or model.b_floor > 0") from None


def update_couplings(model: Model, optimizer, grads: dict, max_step: float = 0.0):
    """optimizer.step on model.params, each change clipped to +-max_step (element-wise, hence local
    and independent of the process grid), then b >= b_floor. Returns (clipped on this rank,
    projected over the domain)."""
    old = {k: v.copy() for k, v in model.params.items()} if max_step > 0 else None
    optimizer.step(model.params, grads)
    clipped = 0
    if old is not None:
        for k, v in model.params.items():
            delta = v - old[k]
            big = np.abs(delta) > max_step
            if np.any(big):
                v[...] = old[k] + np.clip(delta, -max_step, max_step)
            clipped += int(np.count_nonzero(big))
    return clipped, model.project()


def model_arrays(model: Model, optimizer) -> dict:
    """{"couplings/<family>": learned block or 0-d, "optimizer/<key>": state} (checkpoint arrays)."""
    out = {f"couplings/{k}": v for k, v in model.params.items()}
    out.update({f"optimizer/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    return out


def load_model_arrays(model: Model, optimizer, arrays: dict) -> None:
    for fam in model.params:
        model.params[fam][...] = arrays[f"couplings/{fam}"]
    optimizer.load_state_dict({k[len("optimizer/"):]: v for k, v in arrays.items() if k.startswith("optimizer/")})


class Trainer:
    """Sample p, estimate dF/dtheta, update theta; one call of run_epoch() per epoch.

    Each replica's chain (a PersistentChain, stream derive_seed(seed, "learn_chain", replica))
    continues across epochs.
    """

    def __init__(self, model: Model, target: Action, optimizer, comms: Communicators, seed: int,
                 samples: int, sweeps_between: int = 1, thermalize: int = 100,
                 thermalize_after_update: int = 0, algorithm: str = "metropolis", hits: int = 1,
                 step: float = 1.0, start: str = "hot", tune: bool = True, precondition: str = "none",
                 damping: float = 1e-3, max_step: float = 0.0, damping_mode: str = "mean",
                 cluster: str = "none", cluster_every: int = 1):
        if samples < 2:
            raise ValueError(f"training.samples must be >= 2, got {samples}")
        self.model, self.target, self.optimizer, self.comms = model, target, optimizer, comms
        comms.connect(model.lattice)
        self.chain = PersistentChain(comms, seed, "learn_chain", algorithm=algorithm, hits=hits, step=step,
                                     start=start, thermalize=thermalize,
                                     thermalize_after_update=thermalize_after_update, tune=tune,
                                     cluster=cluster, cluster_every=cluster_every)
        self.samples, self.sweeps_between = int(samples), int(sweeps_between)
        if precondition not in ("none", "fisher"):
            raise ValueError(f"training.precondition must be 'none' or 'fisher', got {precondition!r}")
        self.precondition, self.damping, self.damping_mode = precondition, float(damping), damping_mode
        self.max_step = float(max_step)  # > 0: clip every coupling's change per epoch (a trust region)
        self.estimator = GradientEstimator(model, target, comms, fisher=precondition == "fisher")
        self.epoch = 0
        self.shift = 0.0

    seed = property(lambda self: self.chain.seed)
    field = property(lambda self: self.chain.field)

    def current_action(self) -> Action:
        return normalisable_action(self.model, self.epoch)

    def run_epoch(self) -> EpochRecord:
        t0 = time.perf_counter()
        action = self.current_action()
        self.estimator.begin(action, self.shift)
        acc = self.chain.run(action, self.samples, self.sweeps_between, self.estimator.add)
        result = self.estimator.finish()
        self.shift = result.mean_s_minus_a
        lr = self.optimizer.lr()
        norms = result.norms(self.model.lattice.comm)
        grads = result.natural_grads(self.damping, self.damping_mode) if self.precondition == "fisher" else result.grads
        clipped, projected = update_couplings(self.model, self.optimizer, grads, self.max_step)
        self.epoch += 1
        total = time.perf_counter() - t0
        timings = dict(result.timings)
        timings["total"] = total
        timings["sampling"] = total - timings["gradient"] - timings["communication"]
        return EpochRecord(epoch=self.epoch - 1, lr=lr, a_minus_s=-result.mean_s_minus_a,
                           a_minus_s_err=float(np.sqrt(result.var_s_minus_a / result.n)), grad_norms=norms,
                           stats=self.model.stats(), acceptance=acc, timings=timings, projected=projected,
                           result=result, clipped=self.model.lattice.comm.allreduce(clipped))

    def checkpoint_contents(self):
        """(field, shared state, this replica's state, arrays) for write_trainer_checkpoint."""
        return (self.chain.field, {"epoch": self.epoch, "shift": self.shift}, self.chain.state(),
                model_arrays(self.model, self.optimizer))

    def restore(self, ckpt) -> None:
        """Continue from a qftml.io.checkpoints.TrainerCheckpoint."""
        load_model_arrays(self.model, self.optimizer, ckpt.arrays)
        self.chain.restore(ckpt.field, self.model.lattice, ckpt.replica_state)
        self.epoch, self.shift = int(ckpt.state["epoch"]), float(ckpt.state["shift"])
