"""The distributed lattice and fields on it.

Exports:
    Lattice(shape, comm=MPI.COMM_WORLD, grid=None)   periodic lattice over a Cartesian process grid
    Field(lattice)                                    a real field, checkerboard ordered, with ghosts

Geometry errors (dimension outside 2..4, odd extents, a grid that does not divide the lattice into
even blocks) raise ValueError on every rank before any collective call.
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from qftml import _core


class Lattice:
    """Periodic hypercubic lattice of `shape`, split into blocks over the ranks of `comm`.

    `grid` fixes the process grid (one entry per direction, product = comm size); by default
    MPI_Dims_create chooses it, or the grid with the smallest halo that divides the lattice.
    """

    def __init__(self, shape, comm: MPI.Comm | None = None, grid=None):
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self._core = _core.Lattice([int(s) for s in shape], self.comm, [int(g) for g in (grid or [])])

    shape = property(lambda self: tuple(self._core.shape), doc="global extents")
    grid = property(lambda self: tuple(self._core.grid), doc="process grid")
    coords = property(lambda self: tuple(self._core.coords), doc="this rank's grid coordinates")
    local_shape = property(lambda self: tuple(self._core.local_shape), doc="this rank's block")
    local_offset = property(lambda self: tuple(self._core.local_offset), doc="global coordinate of the block origin")
    volume = property(lambda self: self._core.volume, doc="global number of sites")
    local_volume = property(lambda self: self._core.local_volume)
    ndim = property(lambda self: self._core.ndim)
    rank = property(lambda self: self._core.rank, doc="rank in the lattice's Cartesian communicator")
    size = property(lambda self: self._core.size)

    @property
    def local_slices(self) -> tuple[slice, ...]:
        """Slices of a global array that select this rank's block."""
        return tuple(slice(o, o + n) for o, n in zip(self.local_offset, self.local_shape))

    def local_block(self, global_array: np.ndarray) -> np.ndarray:
        """This rank's block of a global array (trailing axes kept), as a contiguous copy."""
        return np.ascontiguousarray(global_array[self.local_slices])

    def __repr__(self):
        return f"Lattice(shape={self.shape}, grid={self.grid}, ranks={self.size})"


class Field:
    """A real scalar field on a Lattice (for `ising` actions its values are +-1).

    Storage is checkerboard ordered with one ghost layer (see cpp/geometry/checkerboard_layout.hpp);
    `local` gives this rank's block in natural order (a copy), `parity_view(p)` the raw padded
    storage of one parity without a copy.
    """

    def __init__(self, lattice: Lattice):
        self.lattice = lattice
        self._core = _core.Field(lattice._core)

    @property
    def local(self) -> np.ndarray:
        """This rank's block in natural order (a copy)."""
        return self._core.get_local()

    @local.setter
    def local(self, values):
        self._core.set_local(np.broadcast_to(np.asarray(values, dtype=float), self.lattice.local_shape))

    def gather(self, root: int = 0) -> np.ndarray | None:
        """The global field on `root` (None elsewhere). Collective; meant for small volumes."""
        return self._core.gather(root)

    def scatter(self, global_field, root: int = 0) -> None:
        """Set the field from a global array held on `root`. Collective."""
        self._core.scatter(global_field, root)

    def exchange_halos(self) -> None:
        """Refresh every ghost from its owner (collective)."""
        self._core.exchange_halos()

    def parity_view(self, parity: int) -> np.ndarray:
        """Zero-copy view of the padded storage of one parity (ghosts included)."""
        return self._core.parity_view(parity)
