"""Inhomogeneous phi^4 actions (DESIGN 1.1).

    S(phi) = - sum_{x,mu} w[x,mu] phi_x phi_{x+mu} - sum_{x,l} g[x,l] phi_x phi_{x+e_l}
             + sum_x (a[x] phi_x^2 + b[x] phi_x^4 + r[x] phi_x)

Homogeneous parametrisation: w = kappa, a = (mu2 + 2 d kappa) / 2, b = lam / 4, r = -h.

Exports:
    Action(lattice, w, a, b, r, g=None, extra_offsets=(), field="real")   local arrays or scalars
    Action.homogeneous(lattice, kappa, mu2, lam, h=0, field="real", extra="nnn"|offsets, g=0)
    Action.from_global(lattice, couplings, ...)      slices this rank's block of global arrays
    .action(field)  .local_action(field)  .gradient_densities(field)  .couplings()
    .density_row(field, columns, row) -> local S   the densities of a learning step in one pass
    homogeneous_couplings(ndim, kappa, mu2, lam, h)  the scalar (w, a, b, r)
    NNN_2D                                          the 2D diagonal offsets (1,1), (1,-1)
"""
from __future__ import annotations

import numpy as np

from qftml import _core
from qftml.engine.lattice import Field, Lattice

FAMILIES = ("w", "g", "a", "b", "r")
NNN_2D = ((1, 1), (1, -1))


def homogeneous_couplings(ndim: int, kappa: float, mu2: float, lam: float, h: float = 0.0) -> dict:
    """(w, a, b, r) of the homogeneous theory: w = kappa, a = (mu2 + 2 d kappa)/2, b = lam/4, r = -h."""
    return {"w": kappa, "a": 0.5 * (mu2 + 2 * ndim * kappa), "b": 0.25 * lam, "r": -h}


def _extra_offsets(extra, ndim):
    if extra is None:
        return []
    if isinstance(extra, str):
        if extra != "nnn" or ndim != 2:
            raise ValueError(f"extra links {extra!r}: only 'nnn' (2D diagonals) is named; give offsets instead")
        return [list(e) for e in NNN_2D]
    return [list(map(int, e)) for e in extra]


class Action:
    """An action of the family above on `lattice`; couplings are this rank's block (or scalars).

    Raises ValueError (on every rank) if exp(-S) is not normalisable: some b < 0, b = 0 only at
    some sites, or b = 0 everywhere with a quadratic form not shown positive definite.
    """

    def __init__(self, lattice: Lattice, w, a, b, r, g=None, extra_offsets=(), field: str = "real"):
        self.lattice = lattice
        self.extra_offsets = _extra_offsets(extra_offsets, lattice.ndim)
        shape, d, n_extra = lattice.local_shape, lattice.ndim, len(self.extra_offsets)

        def block(x, name, trailing=None):
            want = shape if trailing is None else shape + (trailing,)
            x = np.asarray(x, dtype=float)
            if x.ndim and x.shape != want:
                raise ValueError(f"coupling array {name} must be a scalar or have this rank's local shape "
                                 f"{want}, got {x.shape}")
            return np.ascontiguousarray(np.broadcast_to(x, want))

        if g is None:
            g = 0.0
        self._core = _core.Action(lattice._core, field, self.extra_offsets, block(w, "w", d),
                                  block(g, "g", n_extra), block(a, "a"), block(b, "b"), block(r, "r"))

    @classmethod
    def homogeneous(cls, lattice, kappa=1.0, mu2=-0.9515, lam=0.7, h=0.0, field="real", extra=None, g=0.0):
        """The homogeneous theory; `extra` adds link offsets (e.g. "nnn") with coupling `g`."""
        c = homogeneous_couplings(lattice.ndim, kappa, mu2, lam, h)
        return cls(lattice, c["w"], c["a"], c["b"], c["r"], g=g, extra_offsets=extra or (), field=field)

    @classmethod
    def from_global(cls, lattice, couplings: dict, extra_offsets=(), field="real"):
        """Couplings given as global arrays (w: shape + (d,), g: shape + (n_extra,)) or scalars."""
        def local(name):
            x = np.asarray(couplings.get(name, 0.0), dtype=float)
            return x if x.ndim == 0 else lattice.local_block(x)
        return cls(lattice, local("w"), local("a"), local("b"), local("r"), g=local("g"),
                   extra_offsets=extra_offsets, field=field)

    field_type = property(lambda self: self._core.field_type)
    homogeneous_couplings = property(lambda self: self._core.homogeneous, doc="True if every family is constant")
    offsets = property(lambda self: [tuple(o) for o in self._core.offsets],
                       doc="link offsets: unit vectors, then extras")

    def action(self, field: Field) -> float:
        """Global S(phi) (collective). The field's ghosts must be fresh (they are after sweeps)."""
        return self._core.action(field._core)

    def local_action(self, field: Field) -> float:
        """S on this rank's block (not a collective; the global S is the sum over ranks)."""
        return self._core.local_action(field._core)

    def density_row(self, field: Field, columns, row: np.ndarray) -> float:
        """One fused pass: the densities of `columns` [(family, tied, start)] into the contiguous
        float64 array `row` (family in FAMILIES; per site in natural order from row[start], w and g
        with their link index last, or, tied, the local sum at row[start]); returns local_action.
        The densities are gradient_densities' bit for bit; nothing is allocated."""
        if row.dtype != np.float64 or not row.flags.c_contiguous or not row.flags.writeable:
            raise ValueError("density_row needs a writable C-contiguous float64 row")
        return self._core.density_row(field._core, [(FAMILIES.index(f), bool(t), int(s)) for f, t, s in columns], row)

    def gradient_densities(self, field: Field) -> dict:
        """dS/dtheta per site, local block: w (-phi_x phi_{x+mu}), g, a (phi^2), b (phi^4), r (phi)."""
        return self._core.gradient_densities(field._core)

    def couplings(self) -> dict:
        """This rank's couplings, natural order: w (..., d), g (..., n_extra), a, b, r."""
        return self._core.couplings()
