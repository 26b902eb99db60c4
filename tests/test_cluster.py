"""Cluster updates (DESIGN 1.2b): exact transition probabilities, exact labelling on every process
grid, bit-identical chains, exact Ising and Gaussian results, agreement with local-only chains.

Statistical tests compare within 4 standard errors (Gamma method, autocorrelations included).
"""
import itertools

import numpy as np
import pytest
from mpi4py import MPI
from scipy import stats

import qftml
from qftml import _core, exact
from qftml.engine.action import NNN_2D
from qftml.stats.errors import mean_error
from engine_reference import action as reference_action, random_couplings

NSIGMA = 4.0
COINS = 6  # RngPurpose::cluster_coins


def statistics(comm, n, mpi_fraction=5):
    """Full statistics serially; under MPI (oversubscribed) a fraction: the chains are the same on
    every grid (tested below), so the serial run carries the precision."""
    return n if comm.size == 1 else n // mpi_fraction


def two_rank_groups(comm):
    """comm itself if it has 1 or 2 ranks, else independent groups of two."""
    return comm if comm.size <= 2 else comm.Split(comm.rank // 2, comm.rank)


def links_of(shape, offsets):
    """(i, j, l) for every link (x, x + e_l) of the periodic lattice, global lexicographic indices."""
    idx = np.arange(int(np.prod(shape))).reshape(shape)
    out = []
    for link, e in enumerate(offsets):
        j = np.roll(idx, shift=[-v for v in e], axis=tuple(range(len(shape))))
        out += [(int(a), int(b), link) for a, b in zip(idx.ravel(), j.ravel())]
    return out


# --- the exact kernel of one Swendsen-Wang update on 8 sites -------------------------------------

def sw_transition(phi, w, r, links):
    """Exact probabilities T[sigma] that one update from phi flips exactly the sites in the bits of
    sigma: sum over all 2^links bond configurations (bond probability 1 - exp(-2 w phi phi) where
    positive), clusters flipped with probability 1/2 min(1, exp(2 sum_C r phi))."""
    V, n = phi.size, len(links)
    i, j = np.array([a for a, _, _ in links]), np.array([b for _, b, _ in links])
    wl = np.array([w.reshape(V, -1)[a, link] for a, _, link in links])
    x = 2 * wl * phi[i] * phi[j]
    active = x > 0  # links that can be bonded: only they are enumerated
    i, j, P = i[active], j[active], -np.expm1(-x[active])
    n = len(P)
    bonds = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(bool)
    weight = np.prod(np.where(bonds, P, 1 - P), axis=1)
    lab = np.tile(np.arange(V), (2 ** n, 1))
    for _ in range(V):  # propagate the smallest index along bonds: the cluster minimum
        for k in range(n):
            m = np.minimum(lab[:, i[k]], lab[:, j[k]])
            lab[:, i[k]] = np.where(bonds[:, k], m, lab[:, i[k]])
            lab[:, j[k]] = np.where(bonds[:, k], m, lab[:, j[k]])
    parts, inverse = np.unique(lab, axis=0, return_inverse=True)
    pw = np.bincount(inverse.ravel(), weights=weight, minlength=len(parts))
    rphi = np.ravel(r) * phi
    T = np.zeros(2 ** V)
    for part, wgt in zip(parts, pw):
        roots = [c for c in range(V) if part[c] == c]
        pflip = {c: 0.5 * min(1.0, np.exp(2 * rphi[part == c].sum())) for c in roots}
        for choice in itertools.product((0, 1), repeat=len(roots)):
            flipped = dict(zip(roots, choice))
            sigma = sum(1 << s for s in range(V) if flipped[part[s]])
            T[sigma] += wgt * np.prod([pflip[c] if flipped[c] else 1 - pflip[c] for c in roots])
    return T


def tiny_action(shape, seed):
    rng = np.random.default_rng(seed)
    V = int(np.prod(shape))
    phi = rng.choice([-1, 1], V) * rng.uniform(0.3, 1.4, V)
    c = {"w": rng.uniform(-0.3, 0.9, shape + (2,)), "a": rng.uniform(0.8, 1.2, shape), "b": 0.2,
         "r": rng.uniform(-0.3, 0.3, shape)}
    return phi, c


def test_the_exact_kernel_satisfies_detailed_balance():
    shape = (4, 2)
    phi, c = tiny_action(shape, 3)
    links = links_of(shape, [(1, 0), (0, 1)])
    T = sw_transition(phi, c["w"], c["r"], links)
    assert abs(T.sum() - 1) < 1e-12
    S = lambda f: reference_action(f.reshape(shape), c["w"], c["a"], c["b"], c["r"])  # noqa: E731
    for sigma in np.argsort(T)[::-1][1:5]:  # the likeliest moves that change something
        flip = np.array([-1.0 if (sigma >> s) & 1 else 1.0 for s in range(phi.size)])
        back = sw_transition(flip * phi, c["w"], c["r"], links)[sigma]
        assert np.isclose(np.exp(-S(phi)) * T[sigma], np.exp(-S(flip * phi)) * back, rtol=1e-10)


@pytest.mark.mpi
def test_one_update_has_the_exact_transition_probabilities(comm):
    """C++ updates from one configuration (counters 0..N-1) against the enumerated kernel."""
    shape = (4, 2)
    phi, c = tiny_action(shape, 3)
    T = sw_transition(phi, c["w"], c["r"], links_of(shape, [(1, 0), (0, 1)]))
    sub = two_rank_groups(comm)
    lat = qftml.Lattice(shape, sub, grid=[sub.size, 1])
    s = qftml.Sampler(qftml.Action.from_global(lat, c), seed=5, cluster="swendsen-wang")
    start = lat.local_block(phi.reshape(shape))
    n = statistics(comm, 20000, mpi_fraction=8)
    counts = np.zeros(2 ** phi.size)
    weights = 1 << np.arange(phi.size)
    for t in range(n):
        s.field.local = start
        s._core.cluster_update(t)
        g = s.field.gather(0)
        if sub.rank == 0:
            counts[int(((g.ravel() * phi) < 0) @ weights)] += 1
    pvalue = None
    if comm.rank == 0:
        assert counts.sum() == n and np.all(counts[T == 0] == 0)
        big = T * n >= 5
        expected = np.append(T[big] * n, T[~big].sum() * n)
        observed = np.append(counts[big], counts[~big].sum())
        pvalue = stats.chisquare(observed, expected).pvalue
    pvalue = comm.bcast(pvalue)
    assert pvalue > 1e-4, pvalue


# --- labelling: the exact clusters on every process grid ---------------------------------------

def exact_update(phi, r, offsets, seed, sweep):
    """One update with bonds of probability 1 (w = 200 on every link, |phi| >= 0.5): the clusters
    are the same-sign components; each flips if its coin (label = smallest index) says so."""
    V = phi.size
    parent = list(range(V))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    flat = phi.ravel()
    for i, j, _ in links_of(phi.shape, offsets):
        if flat[i] * flat[j] > 0:
            a, b = find(i), find(j)
            parent[max(a, b)] = min(a, b)
    root = np.array([find(i) for i in range(V)])
    labels = np.unique(root)
    u = _core.philox_uniform(seed, COINS, labels.astype(np.uint64), sweep & 0xFFFFFFFF, sweep >> 32)
    rphi = (r * phi).ravel()
    prob = np.array([0.5 * min(1.0, np.exp(2 * rphi[root == c].sum())) for c in labels])
    flips = dict(zip(labels, u < prob))
    out = np.array([-f if flips[c] else f for f, c in zip(flat, root)]).reshape(phi.shape)
    return out, len(labels)


def labelling_field(shape, seed):
    """Random signs near the percolation threshold plus row 0 and column 0 all positive: clusters
    that wrap around both directions and cross every block boundary."""
    rng = np.random.default_rng(seed)
    sign = np.where(rng.uniform(size=shape) < 0.6, 1.0, -1.0)
    sign[0, :] = 1.0
    sign[:, 0] = 1.0
    return sign * rng.uniform(0.5, 1.5, shape)


GRIDS = {1: [[1, 1]], 2: [[1, 2], [2, 1]], 4: [[2, 2], [4, 1], [1, 4]]}


@pytest.mark.mpi
@pytest.mark.parametrize("extra", [(), NNN_2D])
def test_labelling_is_exact_on_every_process_grid(comm, extra):
    shape = (8, 16)
    phi = labelling_field(shape, 9)
    r = np.random.default_rng(4).uniform(-0.02, 0.02, shape)
    offsets = [(1, 0), (0, 1)] + [tuple(e) for e in extra]
    sub_comms = [comm] + ([comm.Split(comm.rank // 2, comm.rank)] if comm.size == 4 else [])
    for sub in sub_comms:
        for grid in GRIDS[sub.size]:
            lat = qftml.Lattice(shape, sub, grid=grid)
            act = qftml.Action.from_global(lat, {"w": 200.0, "g": 200.0, "a": 1.0, "b": 0.1, "r": r},
                                           extra_offsets=extra)
            s = qftml.Sampler(act, seed=21, cluster="swendsen-wang")
            for k, sweep in enumerate((0, 7, 2 ** 33 + 5)):  # the high sweep word is in the coin's counter
                s.field.local = lat.local_block(phi)
                s._core.cluster_update(sweep)
                want, n_clusters = exact_update(phi, r, offsets, 21, sweep)
                got = s.field.gather(0)
                if sub.rank == 0:
                    assert np.array_equal(got, want), f"grid {grid}, sweep {sweep}"
                assert s.cluster_counts()["clusters"] == n_clusters * (k + 1)  # the same field each time
            assert n_clusters >= 5  # several clusters, one of them spanning everything


# --- the same chain on every process grid --------------------------------------------------------

CHAIN_CASES = [  # shape, extra, field, homogeneous, local algorithm, cluster_every
    ((8, 16), [], "real", True, "metropolis", 1),
    ((8, 16), [(1, 1), (1, -1)], "real", False, "metropolis", 2),
    ((8, 16), [], "real", False, "independence", 1),
    ((8, 16), [(1, 1), (1, -1)], "ising", False, "metropolis", 1),
    ((4, 8, 8), [(1, 0, 1)], "real", False, "metropolis", 3),
]


def chain_history(comm, shape, grid, extra, field, homogeneous, algorithm, every, sweeps=7):
    lat = qftml.Lattice(shape, comm, grid=grid)
    if homogeneous:
        act = qftml.Action.homogeneous(lat, kappa=1.0, mu2=-0.9515, lam=0.7, h=0.03, field=field)
    else:
        act = qftml.Action.from_global(lat, random_couplings(shape, len(extra), seed=11), extra_offsets=extra,
                                       field=field)
    s = qftml.Sampler(act, seed=77, algorithm=algorithm, hits=2, cluster="swendsen-wang", cluster_every=every)
    s.thermalize(4)
    out = []
    for n in (1, 4, 1, 1):  # single sweeps and a pipelined run through a cluster update
        s.sweep(n)
        out.append(s.field.gather(0))
    c = s.cluster_counts()
    out.append(np.array([s.step, s.acceptance(), c["updates"], c["clusters"], c["flipped"], s.sweep_index]))
    return out


@pytest.mark.mpi
@pytest.mark.parametrize("shape, extra, field, homogeneous, algorithm, every", CHAIN_CASES)
def test_same_chain_bit_for_bit_on_every_process_grid(comm, shape, extra, field, homogeneous, algorithm, every):
    reference = chain_history(MPI.COMM_SELF, shape, None, extra, field, homogeneous, algorithm, every)
    grids = {2: {1: [[1, 1]], 2: [[1, 2], [2, 1]], 4: [[2, 2], [4, 1], [1, 4]]},
             3: {1: [[1, 1, 1]], 2: [[2, 1, 1], [1, 1, 2]], 4: [[2, 2, 1], [1, 2, 2]]}}[len(shape)]
    for grid in grids[comm.size]:
        got = chain_history(comm, shape, grid, extra, field, homogeneous, algorithm, every)
        if comm.rank == 0:
            for k, (a, b) in enumerate(zip(reference, got)):
                assert np.array_equal(a, b), f"grid {grid} differs from 1 rank at check {k}"


def test_the_cluster_update_counts_as_part_of_a_sweep():
    """sweep(n) in any split gives the same chain; counters follow the cluster_every rule."""
    lat = qftml.Lattice((8, 8), MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat)
    a = qftml.Sampler(act, seed=3, cluster="swendsen-wang", cluster_every=3)
    b = qftml.Sampler(act, seed=3, cluster="swendsen-wang", cluster_every=3)
    a.sweep(10)
    for n in (1, 2, 4, 3):
        b.sweep(n)
    assert np.array_equal(a.field.local, b.field.local) and a.sweep_index == b.sweep_index == 10
    assert a.cluster_counts()["updates"] == 3 and a.cluster_counts()["sites"] == 3 * 64
    c = qftml.Sampler(act, seed=3)  # without clusters: a different chain
    c.sweep(10)
    assert not np.array_equal(a.field.local, c.field.local) and c.cluster_stats() is None


def test_invalid_cluster_settings_are_clear_errors():
    lat = qftml.Lattice((8, 8), MPI.COMM_SELF)
    act = qftml.Action.homogeneous(lat)
    with pytest.raises(ValueError, match="cluster must be one of"):
        qftml.Sampler(act, seed=1, cluster="sw")
    with pytest.raises(ValueError, match="cluster_every must be an integer >= 1"):
        qftml.Sampler(act, seed=1, cluster="swendsen-wang", cluster_every=0)


@pytest.mark.mpi
def test_wolff_on_a_split_lattice_is_refused(comm):
    if comm.size == 1:
        pytest.skip("needs a lattice split over ranks (runs under mpiexec -n 2 and -n 4)")
    lat = qftml.Lattice((8, 8), comm)
    with pytest.raises(ValueError, match="whole lattice on one rank"):
        qftml.Sampler(qftml.Action.homogeneous(lat), seed=1, cluster="wolff")


# --- exact results ---------------------------------------------------------------------------

@pytest.mark.mpi
@pytest.mark.parametrize("cluster", ["swendsen-wang", "wolff"])
@pytest.mark.parametrize("beta, h", [(0.44, 0.0), (0.25, 0.2)])
def test_ising_4x4_cluster_update_alone_against_enumeration(comm, cluster, beta, h):
    if cluster == "wolff" and comm.size > 1:
        pytest.skip("the Wolff update runs on one rank (the serial pass tests it)")
    want = exact.ising_enumeration((4, 4), beta, h)
    lat = qftml.Lattice((4, 4), comm)
    s = qftml.Sampler(qftml.Action.homogeneous(lat, kappa=beta, h=h, field="ising"), seed=3, cluster=cluster)
    E, M2, absM = [], [], []
    for t in range(statistics(comm, 20000, mpi_fraction=10)):
        s._core.cluster_update(t)  # no local updates at all
        o = s.measure()
        E.append(o["sum_links_nn"])
        M2.append(o["M"] ** 2)
        absM.append(abs(o["M"]))
    for name, series, exact_value in [("E", E, want["E"]), ("M2", M2, want["M2"]), ("absM", absM, want["absM"])]:
        value, err = mean_error(series, name)
        assert abs(value - exact_value) < NSIGMA * err, f"{name}: {value} +- {err}, exact {exact_value}"
    stats_ = s.cluster_stats()
    assert stats_["updates"] == len(E) and 1 <= stats_["mean_cluster_size"] <= 16


@pytest.mark.mpi
@pytest.mark.parametrize("cluster, extra, g", [("swendsen-wang", None, 0.0), ("swendsen-wang", "nnn", -0.15),
                                               ("wolff", "nnn", 0.1)])
def test_gaussian_propagator_with_the_cluster_update(comm, cluster, extra, g):
    if cluster == "wolff" and comm.size > 1:
        pytest.skip("the Wolff update runs on one rank (the serial pass tests it)")
    shape, kappa, mu2 = (8, 12), 1.0, 1.0
    a = 0.5 * (mu2 + 4 * kappa)
    offsets = NNN_2D if extra else ()
    G = exact.gaussian_propagator(shape, kappa, a, extra_offsets=offsets, g=g)
    lat = qftml.Lattice(shape, comm)
    act = qftml.Action.homogeneous(lat, kappa=kappa, mu2=mu2, lam=0.0, extra=extra, g=g)
    s = qftml.Sampler(act, seed=7, cluster=cluster)
    s.thermalize(200)
    phi2, nn = [], []
    for _ in range(statistics(comm, 4000)):
        s.sweep(1)
        o = s.measure()
        phi2.append(o["sum_phi2"] / lat.volume)
        nn.append(o["link_sums"][0] / lat.volume)  # (1/V) sum_x phi_x phi_{x+e_0}
    for name, series, want in [("phi2", phi2, G[0, 0]), ("nn", nn, G[1, 0])]:
        value, err = mean_error(series, name)
        assert abs(value - want) < NSIGMA * err, f"{name}: {value} +- {err}, exact {want}"
        if comm.size == 1:
            assert err < 0.03 * G[0, 0]
    assert 0.3 < s.cluster_stats()["flip_fraction"] <= 1.0


# --- cluster + local against local only --------------------------------------------------------

def observables(s, n, every=1):
    out = {k: [] for k in ("abs_m", "m2", "action", "sum_phi2")}
    for _ in range(n):
        s.sweep(every)
        o = s.measure()
        for k in out:
            out[k].append(o[k])
    return out


@pytest.mark.mpi
@pytest.mark.parametrize("case", ["critical", "inhomogeneous"])
def test_cluster_and_local_chains_agree(comm, case):
    shape = (8, 8)
    lat = qftml.Lattice(shape, comm)
    if case == "critical":
        act = qftml.Action.homogeneous(lat, kappa=1.0, mu2=-0.9515, lam=0.7)
    else:
        c = random_couplings(shape, 0, seed=23)
        c["w"] = 2 * c["w"]  # stronger couplings: ordered regions, a sign to flip
        act = qftml.Action.from_global(lat, c)
    n = statistics(comm, 20000)
    results = []
    for cluster in ("none", "swendsen-wang"):
        s = qftml.Sampler(act, seed=17, hits=2, cluster=cluster)
        s.thermalize(500)
        results.append({k: mean_error(v, k) for k, v in observables(s, n).items()})
    for k in results[0]:
        (a, ea), (b, eb) = results[0][k], results[1][k]
        assert abs(a - b) < NSIGMA * np.hypot(ea, eb), f"{case} {k}: local {a} +- {ea}, cluster {b} +- {eb}"


# --- `qftml sample` with a cluster update ----------------------------------------------------------

def test_sample_with_clusters_resumes_bit_for_bit_on_other_rank_counts(tmp_path):
    """1 rank uninterrupted against 2 ranks for half the sweeps, resumed on 4 ranks; the cluster
    statistics are stored with the acceptance; wolff on 2 ranks is a configuration error."""
    import h5py
    from test_sample_command import CONFIG, assert_same_chain, load, qftml as run, write_config

    text = CONFIG.replace("seed = 11", 'seed = 11\ncluster = "swendsen-wang"\ncluster_every = 3')
    d = str(tmp_path)
    ref, res = write_config(d, "ref", text), write_config(d, "res", text)
    assert run([ref], ranks=0).returncode == 0
    r = run([res, "--set", "sampler.sweeps=50"])
    assert r.returncode == 0, r.stderr
    r = run([res, "--resume"], ranks=4)
    assert r.returncode == 0, r.stderr
    a, b = load(ref[:-5] + ".h5"), load(res[:-5] + ".h5")
    assert_same_chain(a, b)
    with h5py.File(ref[:-5] + ".h5") as f, h5py.File(res[:-5] + ".h5") as g:
        cs = f.attrs["cluster_stats"]
        assert g.attrs["cluster_stats"] == cs  # counted over the recorded sweeps, across the resume
    assert '"mean_cluster_size"' in cs and '"updates": 34' in cs  # sweeps 21..120 divisible by 3
    r = run([res, "--set", "sampler.cluster='wolff'", "--set", "output.overwrite=true"])
    assert r.returncode == 2 and "sampler.cluster = 'wolff'" in r.stderr and "Traceback" not in r.stderr
