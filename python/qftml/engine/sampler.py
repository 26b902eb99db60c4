"""Markov chains on the distributed lattice.

Exports:
    Sampler(action, seed, algorithm="metropolis", hits=1, step=1.0, start="hot", field=None)

Algorithms: "metropolis" (phi' = phi + step (2u - 1), `hits` per site, step tuned only in
thermalize) and "heatbath" (exact draw from the single-site conditional). `ising` actions always
use spin-flip Metropolis. Random numbers are counter based (Philox-4x32-10 at global site index,
sweep, hit), so a chain is the same bit for bit on any number of ranks and any process grid, and
(field, sweep_index, step) is a complete checkpoint.
"""
from __future__ import annotations

from qftml import _core
from qftml.engine.action import Action
from qftml.engine.lattice import Field
from qftml.engine.observables import measure


class Sampler:
    def __init__(self, action: Action, seed: int, algorithm: str = "metropolis", hits: int = 1,
                 step: float = 1.0, start: str = "hot", field: Field | None = None):
        self.action = action
        self.field = Field(action.lattice) if field is None else field
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self._core = _core.Sampler(action._core, self.field._core, seed, algorithm, int(hits), float(step))
        self.algorithm = algorithm
        if start == "hot":
            self._core.randomize()
        elif start == "cold":
            self.field.local = 1.0
        elif start != "keep":
            raise ValueError(f"start must be 'hot', 'cold' or 'keep', got {start!r}")

    def sweep(self, n: int = 1) -> None:
        """n sweeps (collective; the GIL is released)."""
        self._core.sweep(int(n))

    def thermalize(self, n: int, tune: bool = True, target_acceptance: float = 0.5) -> None:
        """n sweeps; with `tune` the Metropolis step adapts towards the target acceptance."""
        self._core.thermalize(int(n), tune, target_acceptance)

    def acceptance(self) -> float:
        """Accepted / proposed since reset_counters(), over all ranks, as of the last sweep() or
        thermalize() call. Local: safe to call on one rank only."""
        return self._core.acceptance()

    def reset_counters(self) -> None:
        self._core.reset_counters()

    def measure(self) -> dict:
        """Observables of the current configuration (collective); see qftml.engine.observables.measure."""
        return measure(self.field, self.action)

    seed = property(lambda self: self._core.seed)
    hits = property(lambda self: self._core.hits)

    @property
    def step(self) -> float:
        return self._core.step

    @step.setter
    def step(self, value: float) -> None:
        self._core.step = float(value)

    @property
    def sweep_index(self) -> int:
        """Sweeps done so far: the RNG counter of the next sweep."""
        return self._core.sweep_index

    @sweep_index.setter
    def sweep_index(self, value: int) -> None:
        self._core.sweep_index = int(value)

    def reset_timers(self) -> None:
        """Zero the seconds reported by timers() (this rank)."""
        self._core.reset_timers()

    def timers(self) -> dict:
        """Seconds in site updates, blocked on the halo exchange, and packing/unpacking it."""
        return {"update": self._core.update_seconds, "halo_wait": self._core.halo_wait_seconds,
                "halo_pack": self._core.halo_pack_seconds}
