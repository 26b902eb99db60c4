"""Persistent Markov chains of a trainer: one per replica, each on its replica's decomposed lattice.

A chain continues across updates of the couplings: every segment builds a new Sampler for the
current action with start="keep" on the same field and carries the global sweep counter, so the
random numbers (Philox at (seed, global site, sweep, hit)) never repeat. Replica r's stream is
qftml.engine.rng.derive_seed(seed, purpose, r). Used by `qftml learn` (purpose "learn_chain"),
and meant for `fit` ("fit_chain") and the networks.

Exports:
    PersistentChain(comms, seed, purpose, algorithm, hits, step, start, thermalize,
                    thermalize_after_update, tune=True, cluster="none", cluster_every=1)
        .run(action, samples, sweeps_between, each) -> acceptance (mean over replicas)
                         thermalize (first segment: `thermalize` sweeps, later
                         `thermalize_after_update`), then `samples` times: sweep, each(field)
        .state() -> {"sweeps", "step"}   .restore(local_block, lattice, state)   for checkpoints
        .field, .sweeps, .step, .seed
"""
from __future__ import annotations

from qftml.engine.lattice import Field
from qftml.engine.rng import derive_seed
from qftml.engine.sampler import Sampler


class PersistentChain:
    def __init__(self, comms, seed: int, purpose: str = "learn_chain", algorithm: str = "metropolis",
                 hits: int = 1, step: float = 1.0, start: str = "hot", thermalize: int = 100,
                 thermalize_after_update: int = 0, tune: bool = True, cluster: str = "none",
                 cluster_every: int = 1):
        self.comms = comms
        self.seed = derive_seed(seed, purpose, comms.replica)  # own stream per replica
        self.algorithm, self.hits, self.step, self.start, self.tune = algorithm, int(hits), float(step), start, tune
        self.thermalize, self.thermalize_after_update = int(thermalize), int(thermalize_after_update)
        self.cluster, self.cluster_every = cluster, int(cluster_every)  # Sampler's cluster update
        self.field = None
        self.sweeps = 0

    def run(self, action, samples: int, sweeps_between: int, each) -> float:
        first = self.field is None
        sampler = Sampler(action, seed=self.seed, algorithm=self.algorithm, hits=self.hits, step=self.step,
                          start=self.start if first else "keep", field=self.field, cluster=self.cluster,
                          cluster_every=self.cluster_every)
        if first:
            self.field = sampler.field
        sampler.sweep_index = self.sweeps
        n_therm = self.thermalize if first else self.thermalize_after_update
        if n_therm:
            sampler.thermalize(n_therm, tune=self.tune and self.algorithm == "metropolis")
        sampler.reset_counters()
        for _ in range(samples):
            sampler.sweep(sweeps_between)
            each(self.field)
        acc = sampler.acceptance()
        if self.comms.replicas > 1:
            acc = self.comms.cross.allreduce(acc) / self.comms.replicas
        self.step, self.sweeps = sampler.step, sampler.sweep_index
        return acc

    def state(self) -> dict:
        return {"sweeps": int(self.sweeps), "step": float(self.step)}

    def restore(self, local_block, lattice, state: dict) -> None:
        field = Field(lattice)
        field.local = local_block  # setting the field refreshes its ghosts
        self.field = field
        self.sweeps, self.step = int(state["sweeps"]), float(state["step"])
