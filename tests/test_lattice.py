"""Geometry, process grids, halo exchange and the errors for bad lattices (issue 2)."""
import numpy as np
import pytest

import qftml
from engine_reference import global_index_field


@pytest.mark.mpi
@pytest.mark.parametrize("shape", [(8, 12), (4, 8, 6), (4, 4, 4, 4)])
def test_blocks_tile_the_lattice(comm, shape):
    lat = qftml.Lattice(shape, comm)
    assert np.prod(lat.grid) == comm.size
    owned = np.zeros(shape, dtype=int)
    owned[lat.local_slices] = 1
    total = comm.allreduce(owned)
    assert np.all(total == 1), "every site is owned by exactly one rank"
    assert all(n % 2 == 0 for n in lat.local_shape)


@pytest.mark.mpi
@pytest.mark.parametrize("shape", [(8, 12), (4, 8, 6), (4, 4, 4, 4)])
def test_natural_order_round_trip_and_gather(comm, shape):
    lat = qftml.Lattice(shape, comm)
    f = qftml.Field(lat)
    glob = global_index_field(shape)
    f.local = lat.local_block(glob)
    np.testing.assert_array_equal(f.local, lat.local_block(glob))
    gathered = f.gather(0)
    if comm.rank == 0:
        np.testing.assert_array_equal(gathered, glob)
    else:
        assert gathered is None
    g = qftml.Field(lat)
    g.scatter(glob * 2 if comm.rank == 0 else None, 0)
    np.testing.assert_array_equal(g.local, lat.local_block(glob * 2))


def expected_ghosts(lat, parity):
    """Global index of the site stored at every padded position of one parity array."""
    d, L, off, shape = lat.ndim, lat.local_shape, lat.local_offset, lat.shape
    padded = [n + 2 for n in L[:-1]] + [L[-1] // 2 + 2]
    idx = np.meshgrid(*[np.arange(p) for p in padded], indexing="ij")
    outer = [i - 1 for i in idx[:-1]]
    s = sum(outer) if outer else 0
    c = (parity - s) % 2
    inner = 2 * (idx[-1] - 1) + c
    coords = outer + [inner]
    gidx = 0
    for mu in range(d):
        gidx = gidx * shape[mu] + (coords[mu] + off[mu]) % shape[mu]
    return gidx.astype(float)


@pytest.mark.mpi
@pytest.mark.parametrize("shape", [(8, 12), (4, 8, 6), (8, 4, 4)])
def test_halo_exchange_fills_every_ghost_with_its_owner(comm, shape):
    lat = qftml.Lattice(shape, comm)
    f = qftml.Field(lat)
    f.local = lat.local_block(global_index_field(shape))  # set_local exchanges the halos
    for p in (0, 1):
        np.testing.assert_array_equal(f.parity_view(p), expected_ghosts(lat, p))


@pytest.mark.mpi
def test_explicit_grids(comm):
    n = comm.size
    for grid in ([1, n], [n, 1]):
        lat = qftml.Lattice((8, 16), comm, grid=grid)
        assert lat.grid == tuple(grid)
        assert lat.local_shape == (8 // grid[0], 16 // grid[1])


@pytest.mark.mpi
@pytest.mark.parametrize(
    "shape, grid, message",
    [
        ((8,), None, "dimension 1 is not supported"),
        ((4, 4, 4, 4, 4), None, "dimension 5 is not supported"),
        ((8, 7), None, "extent 7 in direction 1"),
        ((8, 0), None, "extent 0"),
    ],
)
def test_bad_lattices_raise_on_every_rank(comm, shape, grid, message):
    with pytest.raises(ValueError, match=message):
        qftml.Lattice(shape, comm, grid=grid)


@pytest.mark.mpi
def test_bad_process_grids(comm):
    n = comm.size
    with pytest.raises(ValueError, match=f"has {n + 1} blocks but the communicator has {n} ranks"):
        qftml.Lattice((8, 8), comm, grid=[1, n + 1])
    with pytest.raises(ValueError, match="has 3 entries"):
        qftml.Lattice((8, 8), comm, grid=[1, 1, n])
    if n > 1:
        with pytest.raises(ValueError, match=r"local extent 3 in direction 0 \(%d/%d\) is odd" % (3 * n, n)):
            qftml.Lattice((3 * n, 8), comm, grid=[n, 1])
    if n == 4:
        with pytest.raises(ValueError, match="lattice extent 6 in direction 1 is not divisible by 4 ranks"):
            qftml.Lattice((8, 6), comm, grid=[1, 4])


@pytest.mark.mpi
def test_automatic_grid_falls_back_when_dims_create_does_not_divide(comm):
    # MPI_Dims_create balances the grid (2x1 or 2x2) but direction 0 has extent 2: only a grid
    # with 1 block in direction 0 gives even local extents.
    lat = qftml.Lattice((2, 8 * comm.size), comm)
    assert lat.grid == (1, comm.size)
