"""The learnable couplings theta of an action S (DESIGN 1.3, 1.5).

Exports:
    Model(lattice, couplings, learn, tied, extra_offsets, field, b_floor)   learned families in
                                              .params (local blocks, tied: 0-d), the rest fixed;
                                              .action(), .project() (b >= b_floor), .stats()
    random_couplings(lattice, seed, ranges, extra_offsets)  reproducible random local blocks
                                              (engine Philox, purpose "couplings_init")
    global_site_index(lattice)                lexicographic global index of every local site
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from qftml.engine.action import FAMILIES, Action


def _family_shape(lattice, family, n_extra):
    if family == "w":
        return lattice.local_shape + (lattice.ndim,)
    if family == "g":
        return lattice.local_shape + (n_extra,)
    return lattice.local_shape


def global_site_index(lattice) -> np.ndarray:
    """Lexicographic global index (last axis fastest) of every site of this rank's block."""
    coords = np.indices(lattice.local_shape, dtype=np.int64)
    coords += np.asarray(lattice.local_offset, dtype=np.int64).reshape((-1,) + (1,) * lattice.ndim)
    return np.ravel_multi_index(tuple(coords), tuple(lattice.shape)).astype(np.uint64)


def random_couplings(lattice, seed: int, ranges: dict, extra_offsets=()) -> dict:
    """Local blocks of couplings drawn uniformly from ranges[family] = (lo, hi), or a constant.

    theta[x, k] = lo + (hi - lo) u with u = qftml.engine.rng.uniform(seed, "couplings_init", x,
    c2 = family index in FAMILIES, c3 = k) at the global site index x (k: the link direction of w or
    g, else 0): every rank draws only its own block and the couplings do not depend on the grid.
    """
    from qftml.engine import rng

    n_extra = len(extra_offsets)
    index = None
    out = {}
    for i, fam in enumerate(FAMILIES):
        spec = ranges.get(fam, 0.0)
        if fam == "g" and n_extra == 0:
            continue
        if np.ndim(spec) == 0:
            out[fam] = float(spec)
            continue
        lo, hi = map(float, spec)
        index = global_site_index(lattice) if index is None else index
        k = lattice.ndim if fam == "w" else n_extra if fam == "g" else 0
        u = [rng.uniform(seed, "couplings_init", index, i, c) for c in range(max(k, 1))]
        out[fam] = lo + (hi - lo) * (np.stack(u, axis=-1) if k else u[0])
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
