"""qftml.engine.observables: measure() against numpy on random fields, timeslice_correlator against
the direct sum over t0.

measure() is collective (one allreduce): on every rank count it must give the numpy values of the
global field, the same numbers on every rank, and the same bits as a one-rank lattice (the engine's
sums are reproducible). Fields are random normal (real) or random signs (ising), couplings random
and inhomogeneous, with nnn links in 2D and extra links in 3D and 4D.
"""
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from engine_reference import action as reference_action, neighbour, random_couplings
from qftml.engine.observables import timeslice_correlator

CASES = [((8, 12), [(1, 1), (1, -1)]), ((4, 6, 8), [(1, 1, 0), (0, 1, -1)]), ((4, 4, 6, 4), [(1, 0, 0, 1)]),
         ((4, 8), [])]


def _units(d):
    return [tuple(int(i == mu) for i in range(d)) for mu in range(d)]


def _measure(comm, shape, extra, phi, cpl, field="real"):
    lat = qftml.Lattice(shape, comm)
    act = qftml.Action.from_global(lat, cpl, extra_offsets=extra, field=field)
    f = qftml.Field(lat)
    f.local = lat.local_block(phi)
    return qftml.measure(f, act)


def _numpy_observables(phi, cpl, extra):
    d, V = phi.ndim, phi.size
    M = phi.sum()
    m = M / V
    links = [np.sum(phi * neighbour(phi, e)) for e in _units(d) + [tuple(e) for e in extra]]
    return {"M": M, "m": m, "abs_m": abs(m), "m2": m * m, "m4": m ** 4, "sum_phi2": np.sum(phi ** 2),
            "sum_phi4": np.sum(phi ** 4), "link_sums": np.array(links), "sum_links_nn": sum(links[:d]),
            "slice_sums": phi.reshape(phi.shape[0], -1).sum(axis=1),
            "action": reference_action(phi, cpl["w"], cpl["a"], cpl["b"], cpl["r"], cpl["g"], extra)}


@pytest.mark.mpi
@pytest.mark.parametrize("shape, extra", CASES)
def test_measure_matches_numpy_and_one_rank_bits(comm, shape, extra):
    rng = np.random.default_rng(len(shape) * 100 + len(extra))
    phi = rng.normal(size=shape)
    cpl = random_couplings(shape, len(extra), seed=len(shape))
    obs = _measure(comm, shape, extra, phi, cpl)
    ref = _numpy_observables(phi, cpl, extra)
    assert set(obs) == set(ref)
    for name, want in ref.items():   # atol: sums of terms of both signs (M, link sums) may be near 0
        np.testing.assert_allclose(obs[name], want, rtol=1e-12, atol=1e-10, err_msg=name)
    # every rank holds the same numbers, and the same bits as on one rank
    ranks = comm.allgather({k: np.asarray(v).tobytes() for k, v in obs.items()})
    assert all(r == ranks[0] for r in ranks)
    single = _measure(MPI.COMM_SELF, shape, extra, phi, cpl)
    for name in obs:
        assert np.asarray(obs[name]).tobytes() == np.asarray(single[name]).tobytes(), name


@pytest.mark.mpi
def test_measure_ising_field(comm):
    shape, extra = (8, 8), [(1, 1), (1, -1)]
    phi = np.random.default_rng(4).choice([-1.0, 1.0], size=shape)
    cpl = {"w": 0.4, "g": 0.1, "a": 0.0, "b": 0.0, "r": -0.05}
    obs = _measure(comm, shape, extra, phi, cpl, field="ising")
    ref = _numpy_observables(phi, {"w": np.full(shape + (2,), 0.4), "g": np.full(shape + (2,), 0.1), "a": 0.0,
                                   "b": 0.0, "r": -0.05}, extra)
    assert obs["sum_phi2"] == obs["sum_phi4"] == phi.size   # phi^2 = phi^4 = 1: exact
    assert obs["M"] == ref["M"]                              # integer sums are exact
    np.testing.assert_array_equal(obs["link_sums"], ref["link_sums"])
    assert obs["action"] == pytest.approx(ref["action"], rel=1e-12)


def test_timeslice_correlator_is_the_direct_sum():
    rng = np.random.default_rng(9)
    s = rng.normal(size=(3, 5, 7))           # leading axes (records, ...), L0 = 7 last
    V = 56
    c = timeslice_correlator(s, V)
    L0 = s.shape[-1]
    direct = np.stack([sum(s[..., t0] * s[..., (t0 + t) % L0] for t0 in range(L0)) for t in range(L0)], axis=-1) / V
    np.testing.assert_allclose(c, direct, rtol=1e-12, atol=1e-14)
    # symmetric C(t) = C(L0 - t) and C(0) = sum_t0 s(t0)^2 / V
    np.testing.assert_allclose(c[..., 1:], c[..., :0:-1], rtol=1e-12)
    np.testing.assert_allclose(c[..., 0], (s ** 2).sum(-1) / V, rtol=1e-12)


@pytest.mark.mpi
def test_timeslice_correlator_of_measured_slices(comm):
    """The engine's slice sums through the correlator equal the numpy correlator of the field."""
    shape = (8, 6)
    rng = np.random.default_rng(2)
    configs = rng.normal(size=(4,) + shape)
    cpl = random_couplings(shape, 0, seed=1)
    slices = np.array([_measure(comm, shape, [], phi, cpl)["slice_sums"] for phi in configs])
    c = timeslice_correlator(slices, configs[0].size)
    direct = np.array([[np.mean([np.sum(phi[t0]) * np.sum(phi[(t0 + t) % shape[0]]) for t0 in range(shape[0])])
                        * shape[0] / phi.size for t in range(shape[0])] for phi in configs])
    np.testing.assert_allclose(c, direct, rtol=1e-12, atol=1e-12)
