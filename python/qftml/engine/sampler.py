"""Markov chains on the distributed lattice.

Exports:
    Sampler(action, seed, algorithm="metropolis", hits=1, step=1.0, start="hot", field=None,
            cluster="none", cluster_every=1)
    ALGORITHMS           ("metropolis", "independence")
    canonical_algorithm(name) -> str  the name, with the old "heatbath" mapped to "independence"
                                      (DeprecationWarning)
    CLUSTER_ALGORITHMS   ("none", "swendsen-wang", "wolff")
    cluster_summary(counts) -> dict   clusters_per_update, mean_cluster_size, flip_fraction of
                                      summed counts {updates, clusters, sites, flipped}
    Sampler.memory() -> dict          bytes of field, action, tables, halos, clusters on this rank

Algorithms: "metropolis" (phi' = phi + step (2u - 1), `hits` per site, step tuned only in
thermalize) and "independence" (independence Metropolis-Hastings: proposals from a Gaussian
mixture fitted to the whole single-site conditional, exact and always accepted for lam = 0;
called "heatbath" before ensemble format 2, a name still accepted with a DeprecationWarning).
`ising` actions always use spin-flip Metropolis. Random numbers are counter based (Philox-4x32-10
at global site index, all 64 bits of the sweep index, hit), so a chain is the same bit for bit on
any number of ranks and any process grid, and (field, sweep_index, step) is a complete checkpoint.

Cluster updates (DESIGN 1.2b) flip the signs of embedded-Ising clusters: "swendsen-wang" (every
cluster, any process grid, the same chain on all of them) or "wolff" (one single cluster per
update; the lattice must be on one rank). One follows every `cluster_every`-th
local sweep and is part of it: sweep_index, `every` and checkpoints keep their meaning.
"""
from __future__ import annotations

import warnings

from qftml import _core
from qftml.engine.action import Action
from qftml.engine.lattice import Field
from qftml.engine.observables import measure

ALGORITHMS = ("metropolis", "independence")
RENAMED_ALGORITHMS = {"heatbath": "independence"}
CLUSTER_ALGORITHMS = ("none", "swendsen-wang", "wolff")


def canonical_algorithm(name: str, stacklevel: int = 2) -> str:
    """The algorithm's current name; an old name gives a DeprecationWarning, an unknown one ValueError."""
    if name in RENAMED_ALGORITHMS:
        new = RENAMED_ALGORITHMS[name]
        warnings.warn(f"sampler algorithm {name!r} is deprecated, use {new!r} (the same sampler: an independence "
                      f"Metropolis-Hastings update, not a heat bath)", DeprecationWarning, stacklevel=stacklevel + 1)
        return new
    if name not in ALGORITHMS:
        raise ValueError(f"sampler algorithm must be one of {', '.join(map(repr, ALGORITHMS))}, got {name!r}")
    return name
CLUSTER_COUNTS = ("updates", "clusters", "sites", "flipped")


def cluster_summary(counts: dict) -> dict:
    """Mean number of clusters per update, sites per cluster, fraction of clusters flipped."""
    n, k = counts["updates"], counts["clusters"]
    return {"updates": int(n), "clusters_per_update": k / n if n else float("nan"),
            "mean_cluster_size": counts["sites"] / k if k else float("nan"),
            "flip_fraction": counts["flipped"] / k if k else float("nan")}


class Sampler:
    def __init__(self, action: Action, seed: int, algorithm: str = "metropolis", hits: int = 1,
                 step: float = 1.0, start: str = "hot", field: Field | None = None,
                 cluster: str = "none", cluster_every: int = 1):
        self.action = action
        self.field = Field(action.lattice) if field is None else field
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if cluster not in CLUSTER_ALGORITHMS:
            raise ValueError(f"cluster must be one of {', '.join(map(repr, CLUSTER_ALGORITHMS))}, got {cluster!r}")
        if cluster == "wolff" and action.lattice.size > 1:
            raise ValueError(f"cluster = 'wolff' needs the whole lattice on one rank (it is split over "
                             f"{action.lattice.size}); use 'swendsen-wang'")
        if not isinstance(cluster_every, int) or cluster_every < 1:
            raise ValueError(f"cluster_every must be an integer >= 1, got {cluster_every!r}")
        algorithm = canonical_algorithm(algorithm)
        self._core = _core.Sampler(action._core, self.field._core, seed, algorithm, int(hits), float(step),
                                   cluster, int(cluster_every))
        self.algorithm = algorithm
        self.cluster = cluster
        self.cluster_every = int(cluster_every)
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
        """Restart the acceptance and the cluster counters."""
        self._core.reset_counters()

    def cluster_counts(self) -> dict | None:
        """Cluster updates, clusters, sites in them and clusters flipped since reset_counters(),
        over all ranks, as of the last sweep() or thermalize() (local: safe on one rank); None
        without a cluster update. A Swendsen-Wang update covers every site once."""
        c = self._core.cluster_counters()
        return None if c is None else {k: int(c[k]) for k in CLUSTER_COUNTS}

    def cluster_stats(self) -> dict | None:
        """cluster_summary() of cluster_counts(): updates, clusters_per_update, mean_cluster_size
        (sites per cluster), flip_fraction (clusters flipped / clusters). None without clusters."""
        c = self.cluster_counts()
        return None if c is None else cluster_summary(c)

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
        """Seconds in site updates, blocked on the halo exchange, and packing/unpacking it (wall
        time); with a cluster update also cluster_bonds, cluster_labels, cluster_merge (across
        ranks), cluster_flips (this rank's CPU seconds; Wolff counts everything as bonds)."""
        out = {"update": self._core.update_seconds, "halo_wait": self._core.halo_wait_seconds,
               "halo_pack": self._core.halo_pack_seconds}
        c = self._core.cluster_seconds()
        if c is not None:
            out.update({f"cluster_{k}": v for k, v in c.items()})
        return out

    def memory(self) -> dict:
        """Bytes on this rank: the field (two padded parity arrays and its halo buffers), the action's
        coupling arrays, the sampler's row tables and halo buffers, the cluster machinery, and the
        total per local site (docs/engine.md, "Memory")."""
        lat = self.action.lattice
        out = {"field": self.field._core.bytes, "action": self.action._core.bytes,
               **{f"sampler_{k}": v for k, v in self._core.memory_bytes().items()},
               "cluster": int(round(self._core.cluster_bytes_per_site * lat.local_volume))}
        out["per_site"] = sum(out.values()) / lat.local_volume
        return out

    @property
    def cluster_bytes_per_site(self) -> float:
        """Memory of the cluster machinery (bonds, labels, per-cluster arrays) per local site."""
        return self._core.cluster_bytes_per_site
