"""The action, its gradient densities and observables against numpy; normalisability errors."""
import numpy as np
import pytest

import qftml
from engine_reference import action as reference_action, neighbour, random_couplings

NNN = [(1, 1), (1, -1)]


def make(comm, shape, extra, seed, gaussian=False, field="real"):
    lat = qftml.Lattice(shape, comm)
    cpl = random_couplings(shape, len(extra), seed, gaussian=gaussian)
    act = qftml.Action.from_global(lat, cpl, extra_offsets=extra, field=field)
    return lat, cpl, act


@pytest.mark.mpi
@pytest.mark.parametrize("shape, extra", [((8, 12), []), ((8, 12), NNN), ((4, 6, 8), [(1, 1, 0), (0, 1, -1)])])
def test_action_and_gradients_match_numpy(comm, shape, extra):
    lat, cpl, act = make(comm, shape, extra, seed=3)
    phi = np.random.default_rng(7).normal(size=shape)
    f = qftml.Field(lat)
    f.local = lat.local_block(phi)
    S_ref = reference_action(phi, cpl["w"], cpl["a"], cpl["b"], cpl["r"], cpl["g"], extra)
    assert act.action(f) == pytest.approx(S_ref, rel=1e-12)
    grads = act.gradient_densities(f)
    d = len(shape)
    for mu in range(d):
        e = [0] * d
        e[mu] = 1
        np.testing.assert_allclose(grads["w"][..., mu], lat.local_block(-phi * neighbour(phi, e)), rtol=1e-14)
    for k, e in enumerate(extra):
        np.testing.assert_allclose(grads["g"][..., k], lat.local_block(-phi * neighbour(phi, e)), rtol=1e-14)
    np.testing.assert_allclose(grads["a"], lat.local_block(phi ** 2))
    np.testing.assert_allclose(grads["b"], lat.local_block(phi ** 4))
    np.testing.assert_allclose(grads["r"], lat.local_block(phi))
    back = act.couplings()
    for k in "wgabr":
        np.testing.assert_array_equal(back[k], lat.local_block(cpl[k]))
    obs = qftml.measure(f, act)
    assert obs["M"] == pytest.approx(phi.sum(), rel=1e-12, abs=1e-9)
    assert obs["sum_phi2"] == pytest.approx((phi ** 2).sum(), rel=1e-12)
    assert obs["action"] == pytest.approx(S_ref, rel=1e-12)
    for k, e in enumerate([tuple(int(i == mu) for i in range(d)) for mu in range(d)] + [tuple(e) for e in extra]):
        assert obs["link_sums"][k] == pytest.approx(np.sum(phi * neighbour(phi, e)), rel=1e-12, abs=1e-9)
    np.testing.assert_allclose(obs["slice_sums"], phi.reshape(shape[0], -1).sum(1), rtol=1e-12, atol=1e-9)


@pytest.mark.mpi
def test_homogeneous_parametrisation(comm):
    lat = qftml.Lattice((4, 8), comm)
    act = qftml.Action.homogeneous(lat, kappa=1.0, mu2=-0.9515, lam=0.7, h=0.1)
    c = act.couplings()
    assert np.all(c["w"] == 1.0) and np.all(c["a"] == pytest.approx(1.52425))
    assert np.all(c["b"] == pytest.approx(0.175)) and np.all(c["r"] == pytest.approx(-0.1))
    assert act.homogeneous_couplings


@pytest.mark.mpi
def test_non_normalisable_couplings_are_rejected_on_every_rank(comm):
    lat = qftml.Lattice((8, 8), comm)
    b = np.full(lat.local_shape, 0.1)
    if lat.rank == 0:
        b[0, 0] = -0.1  # a bad value on one rank only: every rank must raise
    with pytest.raises(ValueError, match="b < 0 somewhere"):
        qftml.Action(lat, w=1.0, a=1.0, b=b, r=0.0)
    b = np.full(lat.local_shape, 0.1)
    if lat.rank == lat.size - 1:
        b[1, 1] = 0.0
    with pytest.raises(ValueError, match="b = 0 at some sites and > 0 at others"):
        qftml.Action(lat, w=1.0, a=1.0, b=b, r=0.0)
    with pytest.raises(ValueError, match="Gaussian action .* not shown positive definite"):
        qftml.Action.homogeneous(lat, kappa=1.0, mu2=0.0, lam=0.0)  # massless: zero mode
    with pytest.raises(ValueError, match="NaN or infinite"):
        qftml.Action(lat, w=np.nan, a=1.0, b=0.1, r=0.0)
    # the same couplings are fine for Ising spins (finite state space)
    qftml.Action.homogeneous(lat, kappa=0.4, mu2=0.0, lam=0.0, field="ising")


@pytest.mark.mpi
def test_bad_action_arguments(comm):
    lat = qftml.Lattice((8, 8), comm)
    with pytest.raises(ValueError, match="field type must be 'real' or 'ising'"):
        qftml.Action(lat, 1.0, 2.0, 0.1, 0.0, field="complex")
    with pytest.raises(ValueError, match=r"extra link offset \(2,0\)"):
        qftml.Action(lat, 1.0, 2.0, 0.1, 0.0, extra_offsets=[(2, 0)])
    with pytest.raises(ValueError, match="only 'nnn'"):
        qftml.Action(lat, 1.0, 2.0, 0.1, 0.0, extra_offsets="diagonal")
    with pytest.raises(ValueError, match="local shape"):
        qftml.Action(lat, np.ones((3, 3, 2)), 2.0, 0.1, 0.0)


@pytest.mark.mpi
def test_diagonal_links_measured_on_a_chain_of_a_nearest_neighbour_action(comm):
    # The sampler of a nearest-neighbour action exchanges faces only; an action with diagonal
    # links evaluated on its field must refresh the edge and corner ghosts first.
    shape = (8, 12)
    lat = qftml.Lattice(shape, comm)
    chain = qftml.Sampler(qftml.Action.homogeneous(lat), seed=5)
    chain.sweep(3)
    phi = comm.bcast(chain.field.gather(0))
    target = qftml.Action.homogeneous(lat, extra="nnn", g=1.0)
    want = [np.sum(phi * neighbour(phi, e)) for e in NNN]
    obs = qftml.measure(chain.field, target)
    np.testing.assert_allclose(obs["link_sums"][2:], want, rtol=1e-12)
    chain.sweep(1)
    phi = comm.bcast(chain.field.gather(0))
    S_ref = reference_action(phi, w=np.ones(shape + (2,)), a=1.52425, b=0.175, r=0.0, g=np.ones(shape + (2,)),
                             extra_offsets=NNN)
    assert target.action(chain.field) == pytest.approx(S_ref, rel=1e-12)
