"""Free energies by thermodynamic integration (qftml.learning.free_energy) against exact results.

Oracles: Gaussian actions (exact ln Z from momentum sums) and ultralocal quartic actions
(w = 0: Z factorises into one-dimensional integrals done by quadrature).
"""
import numpy as np
import pytest
from mpi4py import MPI
from scipy import integrate

import qftml
from qftml import exact
from qftml.learning import free_energy as FE
from qftml.collective import make_communicators


def test_gauss_legendre_is_exact_for_polynomials():
    t, w = FE.gauss_legendre(5)
    for p in range(10):  # degree <= 2n - 1
        assert w @ t ** p == pytest.approx(1.0 / (p + 1), rel=1e-12)


def test_gaussian_free_energy_matches_exact():
    shape, ws, as_ = (8, 8), 0.4, 1.2
    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    res = FE.free_energy_ti(lat, {"w": ws, "a": as_, "b": 0.0, "r": 0.0}, nodes=6, samples=400, thermalize=50,
                            algorithm="independence", seed=11)
    f_exact = -exact.gaussian_log_z(shape, ws, as_)
    assert res.reference_value == pytest.approx(-exact.gaussian_log_z(shape, 0.0, res.reference["a"]))
    # the quadrature itself is exact enough: integrate the exact integrand 1/2 sum_k (K1 - K0) / K_t
    k1 = exact.gaussian_kernel(shape, ws, as_)
    k0 = exact.gaussian_kernel(shape, 0.0, res.reference["a"])
    exact_integrand = [0.5 * np.sum((k1 - k0) / ((1 - t) * k0 + t * k1)) for t in res.t]
    assert abs(res.reference_value + res.weights @ exact_integrand - f_exact) < 0.05 * res.error
    assert res.error > 0
    assert abs(res.value - f_exact) < 4 * res.error, (res.value, res.error, f_exact)


def test_ultralocal_quartic_free_energy_matches_quadrature():
    shape = (4, 4)
    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    rng = np.random.default_rng(3)
    a = rng.uniform(-0.5, 1.0, size=shape)   # double wells where a < 0
    b = rng.uniform(0.1, 0.5, size=shape)
    exact_f = -sum(np.log(integrate.quad(lambda x: np.exp(-ai * x * x - bi * x ** 4), -np.inf, np.inf)[0])
                   for ai, bi in zip(a.ravel(), b.ravel()))
    res = FE.free_energy_ti(lat, {"w": 0.0, "a": a, "b": b, "r": 0.0}, nodes=10, samples=1500, thermalize=20,
                            algorithm="independence", seed=5)
    assert abs(res.value - exact_f) < 4 * res.error, (res.value, res.error, exact_f)


def test_bad_inputs_raise():
    lat = qftml.Lattice((4, 4), comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="real field"):
        FE.free_energy_ti(lat, {"w": 0.4, "a": 1.0, "b": 0.0, "r": 0.0}, field="ising")
    with pytest.raises(ValueError, match="diagonally dominant"):
        FE.free_energy_ti(lat, {"w": 0.4, "a": 1.0, "b": 0.0, "r": 0.0}, reference={"w": 1.0, "a": 1.0})


@pytest.mark.mpi
def test_replicas_share_nodes_and_reproduce_the_single_lattice_result():
    world = MPI.COMM_WORLD
    couplings = {"w": 0.5, "a": 1.5, "b": 0.2, "r": 0.0}
    kw = dict(nodes=4, samples=60, thermalize=20, seed=2)
    comms = make_communicators(world, world.size)
    lat = qftml.Lattice((8, 8), comm=comms.domain)
    shared = FE.free_energy_ti(lat, couplings, comms=comms, **kw)
    alone = FE.free_energy_ti(qftml.Lattice((8, 8), comm=MPI.COMM_SELF), couplings, **kw)
    np.testing.assert_allclose(shared.integrand, alone.integrand, rtol=1e-10)
    np.testing.assert_allclose(shared.integrand_error, alone.integrand_error, rtol=1e-8)
    assert shared.value == pytest.approx(alone.value, rel=1e-10)


def test_node_streams_of_different_estimates_are_distinct():
    """Issue 11: with seed + 1000 + e + 7919 (i + 1), node i at epoch e + 7919 reused the chain of
    node i + 1 at epoch e. Streams are now derive_seed(seed, "ti_node", estimate, node)."""
    from qftml.engine.rng import derive_seed

    old = lambda e, i: 3 + 1000 + e + 7919 * (i + 1)  # noqa: E731
    assert old(7919, 0) == old(0, 1)
    estimates = [0, 1, 7919, 7920, FE.TARGET_STREAM]
    seeds = [derive_seed(3, "ti_node", e, i) for e in estimates for i in range(16)]
    assert len(set(seeds)) == len(seeds)
    assert not set(seeds) & {derive_seed(3, "learn_chain", r) for r in range(16)}
