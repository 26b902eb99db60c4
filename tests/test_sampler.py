"""Samplers: decomposition independence, detailed balance, exact Gaussian and Ising results.

Statistical tests compare with exact results within 4 standard errors, the errors from the
Gamma method (pyerrors) so that autocorrelations are accounted for.
"""
import numpy as np
import pyerrors as pe
import pytest
from mpi4py import MPI
from scipy import integrate, stats

import qftml
from qftml import exact
from engine_reference import random_couplings

NSIGMA = 4.0


def statistics(comm, n, mpi_fraction=5):
    """Full statistics serially; under MPI (oversubscribed, every sweep communicates) a fifth.

    The chains are bitwise identical on any rank count (test above), so the serial run carries the
    precision; the MPI runs check the same physics end to end with wider (still honest) errors.
    """
    return n if comm.size == 1 else n // mpi_fraction


def chain_history(comm, shape, grid, extra, algorithm, field, homogeneous, sweeps=6, hits=2):
    """Gathered configurations after each sweep (on rank 0 of comm) for one fixed chain."""
    lat = qftml.Lattice(shape, comm, grid=grid)
    if homogeneous:
        act = qftml.Action.homogeneous(lat, kappa=0.9, mu2=-0.5, lam=0.7, h=0.05, field=field,
                                       extra=extra or None, g=0.1)
    else:
        act = qftml.Action.from_global(lat, random_couplings(shape, len(extra), seed=11), extra_offsets=extra,
                                       field=field)
    s = qftml.Sampler(act, seed=1234, algorithm=algorithm, hits=hits, step=1.3)
    s.thermalize(3, tune=True)  # tuning must be decomposition independent too
    out = []
    for _ in range(sweeps):
        s.sweep(1)
        out.append(s.field.gather(0))
    o = s.measure()  # reproducible sums: identical bits on every grid, too
    out.append(np.concatenate([[s.step, s.acceptance(), act.action(s.field), o["M"], o["sum_phi2"], o["sum_phi4"],
                                o["action"]], o["link_sums"], o["slice_sums"]]))
    return out


CASES = [
    ((8, 16), [], "metropolis", "real", True),
    ((8, 16), [], "metropolis", "real", False),
    ((8, 16), [(1, 1), (1, -1)], "metropolis", "real", False),
    ((8, 16), [], "independence", "real", False),
    ((8, 16), [(1, 1), (1, -1)], "independence", "real", True),
    ((8, 16), [], "metropolis", "ising", True),
    ((8, 16), [(1, 1), (1, -1)], "metropolis", "ising", False),
    ((4, 8, 8), [], "metropolis", "real", False),
    ((4, 8, 8), [(1, 0, 1)], "independence", "real", False),
]


def grids_for(size, ndim):
    if ndim == 2:
        return {1: [[1, 1]], 2: [[1, 2], [2, 1]], 4: [[2, 2], [1, 4], [4, 1]]}[size]
    return {1: [[1, 1, 1]], 2: [[1, 1, 2], [2, 1, 1]], 4: [[2, 2, 1], [1, 2, 2]]}[size]


@pytest.mark.mpi
@pytest.mark.parametrize("shape, extra, algorithm, field, homogeneous", CASES)
def test_same_chain_bit_for_bit_on_every_process_grid(comm, shape, extra, algorithm, field, homogeneous):
    reference = chain_history(MPI.COMM_SELF, shape, None, extra, algorithm, field, homogeneous)
    comms = [comm]
    if comm.size == 4:
        comms.append(comm.Split(comm.rank // 2, comm.rank))  # two independent 2-rank groups
    for sub in comms:
        for grid in grids_for(sub.size, len(shape)):
            got = chain_history(sub, shape, grid, extra, algorithm, field, homogeneous)
            if sub.rank == 0:
                for step, (a, b) in enumerate(zip(reference, got)):
                    assert np.array_equal(a, b), f"grid {grid} differs from 1 rank after sweep {step}"


def test_hot_start_differs_by_seed_and_ising_spins_are_unit():
    lat = qftml.Lattice((8, 8), MPI.COMM_SELF)
    a = qftml.Sampler(qftml.Action.homogeneous(lat), seed=1).field.local
    b = qftml.Sampler(qftml.Action.homogeneous(lat), seed=2).field.local
    assert not np.array_equal(a, b)
    s = qftml.Sampler(qftml.Action.homogeneous(lat, kappa=0.4, field="ising"), seed=3)
    s.sweep(5)
    assert set(np.unique(s.field.local)) <= {-1.0, 1.0}


# --- detailed balance: single-site densities ---------------------------------------------------

# (a, b, j): single wells, a shifted well, symmetric and tilted double wells
SITE_PARAMS = [(1.0, 0.05, 0.3), (0.5, 0.2, -0.4), (-0.8, 0.5, 0.0), (-1.5, 0.3, 0.6), (2.0, 1.0, 3.0)]


def exact_bin_probabilities(alpha, beta, j, edges):
    dens = lambda x: np.exp(-alpha * x * x - beta * x ** 4 + j * x)  # noqa: E731
    lo, hi = edges[0] - 20, edges[-1] + 20
    z = integrate.quad(dens, lo, hi, limit=200, points=[0.0])[0]
    inner = np.array([integrate.quad(dens, a, b)[0] for a, b in zip(edges[:-1], edges[1:])])
    left = integrate.quad(dens, lo, edges[0])[0]
    right = integrate.quad(dens, edges[-1], hi)[0]
    return np.concatenate([[left], inner, [right]]) / z


def chi2_pvalue(samples, alpha, beta, j):
    edges = np.quantile(samples, np.linspace(0.02, 0.98, 25))
    p = exact_bin_probabilities(alpha, beta, j, edges)
    counts = np.histogram(samples, bins=np.concatenate([[-np.inf], edges, [np.inf]]))[0]
    expected = p * len(samples)
    return stats.chisquare(counts, expected).pvalue


@pytest.mark.parametrize("alpha, beta, j", SITE_PARAMS + [(0.7, 0.0, 0.5), (-3.0, 0.4, 0.2)])
def test_independence_1d_update_samples_the_quartic_density(alpha, beta, j):
    x, acceptance = qftml._core.quartic_chain(alpha, beta, j, 200_000, 5)
    assert chi2_pvalue(x[::5], alpha, beta, j) > 1e-4  # thinned: acceptance is high, tau ~ 1
    assert acceptance > 0.5
    if beta == 0.0:
        assert acceptance == 1.0  # the proposal is the Gaussian conditional itself


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm, hits, thin", [("metropolis", 4, 4), ("independence", 1, 1)])
def test_single_site_updates_leave_the_conditional_invariant(comm, algorithm, hits, thin):
    # With w = 0 every site is an independent 1D system exp(-a x^2 - b x^4 - r x), so the chain of
    # each site must sample exactly that density. Each (a, b, r) sits on several sites and ranks.
    shape = (4, 4 * len(SITE_PARAMS))
    lat = qftml.Lattice(shape, comm)
    params = np.array(SITE_PARAMS)
    column = np.arange(shape[1]) % len(SITE_PARAMS)
    glob = {k: np.broadcast_to(params[column, i], shape) for i, k in enumerate("abr")}
    glob["r"] = -glob["r"]  # the conditional's linear coefficient is j = -r
    act = qftml.Action.from_global(lat, {"w": 0.0, **glob})
    s = qftml.Sampler(act, seed=99, algorithm=algorithm, hits=hits, step=1.5)
    s.thermalize(200)
    s.reset_counters()
    history = []
    for _ in range(statistics(comm, 1500)):
        s.sweep(thin)
        history.append(s.field.gather(0))
    pvalues = None
    if comm.rank == 0:
        history = np.array(history)
        pvalues = [chi2_pvalue(history[:, :, column == i].ravel(), *SITE_PARAMS[i]) for i in range(len(SITE_PARAMS))]
    pvalues = comm.bcast(pvalues)
    assert min(pvalues) > 1e-4 / len(SITE_PARAMS), pvalues
    assert 0.2 < s.acceptance() <= 1.0


# --- exact Gaussian and Ising results ---------------------------------------------------------

def mean_with_error(samples, name):
    o = pe.Obs([np.asarray(samples, dtype=float)], [name])
    o.gamma_method()
    return o.value, o.dvalue


@pytest.mark.mpi
@pytest.mark.parametrize("algorithm", ["metropolis", "independence"])
def test_gaussian_propagator_on_non_square_lattice(comm, algorithm):
    shape, kappa, mu2 = (8, 12), 1.0, 0.6
    a = 0.5 * (mu2 + 4 * kappa)
    G = exact.gaussian_propagator(shape, kappa, a)
    lat = qftml.Lattice(shape, comm)
    s = qftml.Sampler(qftml.Action.homogeneous(lat, kappa=kappa, mu2=mu2, lam=0.0), seed=7, algorithm=algorithm)
    s.thermalize(300)
    samples = []
    for _ in range(statistics(comm, 3000)):
        s.sweep(1)
        phi = s.field.gather(0)
        if comm.rank == 0:
            f = np.fft.fftn(phi)
            samples.append(np.fft.ifftn(f * np.conj(f)).real / phi.size)  # (1/V) sum_y phi_y phi_{y+x}
    results = None
    if comm.rank == 0:
        samples = np.array(samples)
        results = []
        for x in [(0, 0), (1, 0), (0, 1), (1, 1), (4, 6), (2, 5)]:
            value, err = mean_with_error(samples[:, x[0], x[1]], f"G{x}")
            results.append((x, value, err, G[x]))
    for x, value, err, want in comm.bcast(results):
        assert abs(value - want) < NSIGMA * err, f"G{x}: {value} +- {err}, exact {want}"
        if comm.size == 1:
            assert err < 0.02 * G[0, 0], "the test must be sharp enough to mean something"


@pytest.mark.mpi
@pytest.mark.parametrize("beta, h", [(0.3, 0.0), (0.44, 0.0), (0.25, 0.2)])
def test_ising_4x4_against_enumeration(comm, beta, h):
    want = exact.ising_enumeration((4, 4), beta, h)
    lat = qftml.Lattice((4, 4), comm)
    s = qftml.Sampler(qftml.Action.homogeneous(lat, kappa=beta, h=h, field="ising"), seed=3, hits=1)
    s.sweep(200)
    E, M2, absM = [], [], []
    for _ in range(statistics(comm, 20000, mpi_fraction=20)):
        s.sweep(1)
        o = s.measure()
        E.append(o["sum_links_nn"])
        M2.append(o["M"] ** 2)
        absM.append(abs(o["M"]))
    for name, series, exact_value in [("E", E, want["E"]), ("M2", M2, want["M2"]), ("absM", absM, want["absM"])]:
        value, err = mean_with_error(series, name)
        assert abs(value - exact_value) < NSIGMA * err, f"{name}: {value} +- {err}, exact {exact_value}"


STREAMING_CASES = [
    ((8, 16), "metropolis", "real", False),
    ((16, 8), "independence", "real", True),
    ((8, 16), "metropolis", "ising", False),
    ((64, 8), "metropolis", "real", False),  # 2D, >= 8 local rows: several sweeps pipelined per pass
    ((32, 16), "metropolis", "ising", True),
    ((4, 8, 8), "metropolis", "real", False),
    ((4, 4, 4, 8), "independence", "real", False),
]


@pytest.mark.mpi
@pytest.mark.parametrize("shape, algorithm, field, homogeneous", STREAMING_CASES)
def test_streaming_sweep_equals_colour_order(comm, shape, algorithm, field, homogeneous):
    """Two-colour sweeps stream (colour 1 of a row right after colour 0 of the rows it reads; in 2D
    sweep(n) pipelines up to 4 sweeps per pass): every site must see the same neighbours and RNG
    counters as in plain colour order, one sweep at a time."""
    histories = []
    for streaming in (True, False):
        lat = qftml.Lattice(shape, comm)
        if homogeneous:
            act = qftml.Action.homogeneous(lat, kappa=0.9, mu2=-0.5, lam=0.7, h=0.05, field=field)
        else:
            act = qftml.Action.from_global(lat, random_couplings(shape, 0, seed=5), field=field)
        s = qftml.Sampler(act, seed=77, algorithm=algorithm, hits=2, step=1.2)
        assert s._core.streaming  # the default for two colours
        s._core.streaming = streaming
        gathered = []
        for n in (4, 1, 7, 2):  # pipelines of 4, 3, 2 sweeps and single sweeps
            s.sweep(n)
            gathered.append(s.field.gather(0))
        histories.append((gathered, s.acceptance()))
    if comm.rank == 0:
        for a, b in zip(histories[0][0], histories[1][0]):
            assert np.array_equal(a, b)
        assert histories[0][1] == histories[1][1]


def test_streaming_needs_two_colours():
    lat = qftml.Lattice((8, 8), MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat, kappa=0.9, mu2=-0.5, lam=0.7, extra=[(1, 1)], g=0.1)
    s = qftml.Sampler(act, seed=1)
    assert not s._core.streaming and s._core.n_colours == 4
    with pytest.raises(ValueError, match="streaming sweeps need two colours"):
        s._core.streaming = True


# --- the RNG counter holds all 64 bits of the sweep index ------------------------------------------

# Sweep indices that all agree in their low 32 bits (ensemble format 1 used only those, so all of
# these gave the same stream there): 2^32 and 2^32 + 2^k for every word and half-word boundary.
WIDE_SWEEPS = [5, 2 ** 32, *[2 ** 32 + 2 ** k for k in (0, 15, 16, 31, 32, 33, 47, 48, 49, 62, 63)], 2 ** 64 - 1]


@pytest.mark.parametrize("shape, algorithm, field, extra", [
    ((8, 8), "metropolis", "real", []), ((8, 8), "independence", "real", []), ((8, 8), "metropolis", "ising", []),
    ((4, 4, 4, 4), "metropolis", "real", []), ((8, 8), "metropolis", "real", [(1, 1)])])
def test_streams_differ_in_every_bit_of_the_sweep_index(shape, algorithm, field, extra):
    """One sweep from the same field at each sweep index: every index gives its own field; the same
    index gives the same field (the check that the comparison can see equality). Ising at a small
    coupling, so that most spin flips are random (a cold phase would make one sweep deterministic)."""
    lat = qftml.Lattice(shape, MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat, kappa=0.2 if field == "ising" else 0.9, mu2=-0.5, lam=0.7, field=field,
                                   extra=extra or None, g=0.1)
    s = qftml.Sampler(act, seed=21, algorithm=algorithm, hits=2, step=1.1)
    start = s.field.local.copy()

    def one_sweep(index):
        s.field.local = start
        s.sweep_index = index
        s.sweep(1)
        assert s.sweep_index == (index + 1) % 2 ** 64
        return s.field.local.copy()

    results = [one_sweep(i) for i in WIDE_SWEEPS]
    assert np.array_equal(one_sweep(WIDE_SWEEPS[3]), results[3])
    for i in range(len(results)):
        for j in range(i):
            assert not np.array_equal(results[i], results[j]), (WIDE_SWEEPS[i], WIDE_SWEEPS[j])


def test_pipelined_sweeps_cross_2_to_the_32():
    """sweep(4) in 2D pipelines four sweeps through one pass; across 2^32 it must equal four single
    sweeps in colour order (the counter of each stage is a 64-bit sweep index)."""
    fields = []
    for streaming in (True, False):
        lat = qftml.Lattice((16, 16), MPI.COMM_SELF)
        s = qftml.Sampler(qftml.Action.homogeneous(lat, kappa=0.9, mu2=-0.5, lam=0.7), seed=4, step=1.2)
        s._core.streaming = streaming
        s.sweep_index = 2 ** 32 - 2
        if streaming:
            s.sweep(4)
        else:
            for _ in range(4):
                s.sweep(1)
        assert s.sweep_index == 2 ** 32 + 2
        fields.append(s.field.local)
    assert np.array_equal(*fields)


def test_old_name_heatbath_warns_and_is_the_independence_sampler():
    lat = qftml.Lattice((8, 8), MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat, kappa=0.9, mu2=-0.5, lam=0.7)
    new = qftml.Sampler(act, seed=5, algorithm="independence")
    with pytest.warns(DeprecationWarning, match="'heatbath' is deprecated, use 'independence'"):
        old = qftml.Sampler(act, seed=5, algorithm="heatbath")
    assert old.algorithm == "independence"
    new.sweep(3), old.sweep(3)
    assert np.array_equal(new.field.local, old.field.local)
    with pytest.raises(ValueError, match="'metropolis', 'independence'"):
        qftml.Sampler(act, seed=5, algorithm="heat-bath")
