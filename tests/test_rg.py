"""Block-spin transformations R_b (qftml.rg.blocking): exact blocking, majority rule with counter-based
tie-breaking, decomposition independence, clear errors for indivisible extents."""
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml.engine import rng
from qftml.rg.blocking import block_ensemble, block_field, block_local, check_blockable, global_index


def test_tie_coins_are_the_engine_philox_of_the_global_block():
    """A tie of the majority rule takes -1 iff the engine uniform (purpose rg_tie) at counter
    (global coarse block index, configuration, level) is < 1/2."""
    cb = (-1.0) ** np.add.outer(np.arange(16), np.arange(16))   # every 2x2 block is a tie
    got = block_local(cb, 2, field="ising", seed=7, config=3, level=2)
    u = rng.uniform(7, "rg_tie", np.arange(64, dtype=np.uint64), c2=3, c3=2).reshape(8, 8)
    assert np.array_equal(got, np.where(u < 0.5, -1.0, 1.0))


def test_constant_field_blocks_exactly():
    for b in (2, 4):
        x = np.full((8, 8), 0.375)
        assert np.array_equal(block_local(x, b), np.full((8 // b, 8 // b), 0.375))
        assert np.array_equal(block_local(x, b, scale=2.0), np.full((8 // b, 8 // b), 0.75))
        assert np.array_equal(block_local(-np.ones((8, 8)), b, field="ising"), -np.ones((8 // b, 8 // b)))
    x3 = np.full((4, 4, 4), -1.5)
    assert np.array_equal(block_local(x3, 2), np.full((2, 2, 2), -1.5))


def test_known_patterns():
    # phi(x, y) = x + 10 y: the block average is the value at the block centre
    x, y = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    X, Y = np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij")
    assert np.array_equal(block_local(x + 10 * y, 2), (2 * X + 0.5) + 10 * (2 * Y + 0.5))
    # a checkerboard averages to zero
    cb = (-1.0) ** (x + y)
    assert np.array_equal(block_local(cb, 2), np.zeros((4, 4)))
    # majority rule: three of four spins decide
    s = np.ones((4, 4))
    s[0, 0] = s[2, 3] = -1
    s[1, 2] = s[0, 3] = s[1, 3] = -1  # block (0,1): three -1
    assert np.array_equal(block_local(s, 2, field="ising"), np.array([[1.0, -1.0], [1.0, 1.0]]))


def test_ties_are_fair_reproducible_and_depend_on_the_global_block():
    cb = (-1.0) ** np.add.outer(np.arange(64), np.arange(64))   # every 2x2 block is a tie
    a = block_local(cb, 2, field="ising", seed=5)
    assert np.array_equal(a, block_local(cb, 2, field="ising", seed=5))
    assert not np.array_equal(a, block_local(cb, 2, field="ising", seed=6))
    assert not np.array_equal(a, block_local(cb, 2, field="ising", seed=5, config=1))
    n = a.size
    assert abs((a > 0).mean() - 0.5) < 5 * 0.5 / np.sqrt(n)
    # a sub-block blocked with its global offset gives the same coins as the whole lattice
    part = block_local(cb[16:48, 32:64], 2, field="ising", seed=5, offset=(16, 32), shape=(64, 64))
    assert np.array_equal(part, a[8:24, 16:32])


def test_global_index_is_lexicographic():
    idx = global_index((6, 4), (2, 0), (2, 4))
    assert np.array_equal(idx, np.arange(8, 16).reshape(2, 4))


def test_indivisible_extents_are_clear_errors():
    with pytest.raises(ValueError, match="not divisible by b\\^3 = 8"):
        check_blockable((24, 24), (2, 1), 2, levels=3)
    check_blockable((32, 32), (2, 2), 2, levels=3)
    with pytest.raises(ValueError, match="blocking factor"):
        check_blockable((8, 8), (1, 1), 1)
    with pytest.raises(ValueError, match="not divisible by the blocking factor 2"):
        block_local(np.zeros((6, 5)), 2)


def test_block_ensemble_matches_per_configuration_blocking():
    lat = qftml.Lattice((8, 8), comm=MPI.COMM_SELF)
    rng = np.random.default_rng(0)
    cfgs = rng.normal(size=(5, 8, 8))
    got = block_ensemble(lat, cfgs, 2, scale=1.3)
    for c, g in zip(cfgs, got):
        assert np.allclose(g, block_local(c, 2, scale=1.3), rtol=1e-15, atol=1e-15)
    spins = np.sign(rng.normal(size=(3, 8, 8)))
    got = block_ensemble(lat, spins, 2, field="ising", seed=2, first_config=4)
    for i, c in enumerate(spins):
        assert np.array_equal(got[i], block_local(c, 2, field="ising", seed=2, config=4 + i))


@pytest.mark.mpi
def test_blocking_is_independent_of_the_process_grid(comm):
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(16, 16))
    spins = (-1.0) ** np.add.outer(np.arange(16), np.arange(16))
    spins[::3, ::5] *= -1
    ref_real = block_local(phi, 2, scale=1.1)
    ref_ising = block_local(spins, 2, field="ising", seed=9, config=3, level=1)
    grids = [g for g in ([comm.size, 1], [1, comm.size], [2, comm.size // 2]) if np.prod(g) == comm.size and
             all(16 % x == 0 for x in g)]
    for grid in grids:
        lat = qftml.Lattice((16, 16), comm=comm, grid=grid)
        r = block_field(lat, lat.local_block(phi), 2, scale=1.1)
        s = block_field(lat, lat.local_block(spins), 2, field="ising", seed=9, config=3, level=1)
        cs = tuple(slice(o // 2, (o + n) // 2) for o, n in zip(lat.local_offset, lat.local_shape))
        assert np.array_equal(r, ref_real[cs])
        assert np.array_equal(s, ref_ising[cs])


@pytest.mark.mpi
def test_blocking_errors_on_every_rank(comm):
    if comm.size == 1:
        pytest.skip("needs several ranks to split the lattice into blocks not divisible by b")
    lat = qftml.Lattice((4 * comm.size, 4 * comm.size), comm=comm, grid=[comm.size, 1])
    with pytest.raises(ValueError, match="not divisible"):
        block_ensemble(lat, np.zeros((1,) + lat.local_shape), b=8)
