"""Block-constrained refinement of upscaled configurations (qftml.rg.refine, docs/irg.md).

The moves keep every block sum to rounding; they sample the fine theory's conditional given the
block field exactly (phi^4 on one 2x2 block against 3D quadrature of the conditional density, and a
Gaussian 4x4 lattice of four blocks against the exact conditional moments); upscaling plus
refinement is the same bit for bit on every process grid; on a Gaussian theory the refined upscaled
two-point function is the exact propagator at the larger size at every momentum."""
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml import _core
from qftml.engine import rng
from qftml.exact import gaussian_kernel
from qftml.rg.blocking import block_ensemble, block_local
from qftml.rg.inverse import InverseRG
from qftml.rg.refine import Refiner, block_couplings, check_refinable, constrained_sweeps
from qftml.stats.errors import mean_error, tau_int


def _self_lattice(shape):
    return qftml.Lattice(shape, comm=MPI.COMM_SELF)


class _Kernel:
    """Sweeps of the C++ kernel on one rank's whole lattice (every direction periodic inside the block,
    so the ghost layer of the padded array is never read)."""

    def __init__(self, phi, b, couplings, seed, step):
        self.P = np.zeros(tuple(n + 2 for n in phi.shape))
        self.inner = tuple(slice(1, -1) for _ in phi.shape)
        self.P[self.inner] = phi
        self.args = ([0] * phi.ndim, list(phi.shape), b, *couplings, seed, rng.purpose("irg_refine"))
        self.step, self.sweep = step, 0

    def run(self, sweeps):
        for _ in range(sweeps):
            for colour in (0, 1):
                _core.block_constrained_sweep(self.P, *self.args, self.sweep, colour, self.step)
            self.sweep += 1
        return self.P[self.inner]


def test_constrained_moves_keep_every_block_sum_to_rounding():
    lat = _self_lattice((8, 12))
    phi = np.random.default_rng(1).normal(size=(8, 12))
    out, acc = constrained_sweeps(lat, phi, 2, block_couplings(2, 1.0, -0.95, 0.7), 10, seed=3, step=1.0)
    assert 0.2 < acc < 0.9
    assert np.abs(out - phi).max() > 0.1                                  # the field moved
    np.testing.assert_allclose(block_local(out, 2), block_local(phi, 2), rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="even number"):
        check_refinable((6, 8), (1, 1), 2)                               # 3 blocks: the colouring fails
    with pytest.raises(ValueError, match="multiple of b"):
        check_refinable((12, 8), (2, 1), 4)                              # local extent 6, b = 4


def _exact_marginal_2x2(Phi, couplings, edges, n=121, half=4.5):
    """Marginal density of phi_00 on the 2x2 periodic lattice given the block sum 4 Phi, by quadrature of
    exp(-S) over (phi_00, phi_01, phi_10); phi_11 = 4 Phi - the others. S from DESIGN 1.1 directly."""
    kappa, a, b4, r = couplings
    g = np.linspace(Phi - half, Phi + half, n)
    t, u, v = np.meshgrid(g, g, g, indexing="ij")
    w = 4 * Phi - t - u - v
    f = np.stack([[t, u], [v, w]])                       # f[i, j] = phi_ij
    links = sum(np.sum(f * np.roll(f, -1, axis=mu), axis=(0, 1)) for mu in (0, 1))
    S = -kappa * links + np.sum(a * f ** 2 + b4 * f ** 4 + r * f, axis=(0, 1))
    dens = np.exp(-(S - S.min())).sum(axis=(1, 2))
    cdf = np.concatenate([[0.0], np.cumsum(dens)])
    cdf /= cdf[-1]
    pos = np.concatenate([[g[0] - (g[1] - g[0]) / 2], (g[1:] + g[:-1]) / 2, [g[-1] + (g[1] - g[0]) / 2]])
    return np.diff(np.interp(edges, pos, cdf))


def test_constrained_moves_sample_the_phi4_conditional_of_one_block():
    """phi^4 on a 2x2 lattice = one block of b = 2, couplings with a strongly quartic conditional
    (mu2 = -4, lam = 2: a = 0, b = 0.5): the histogram of phi_00 of the constrained chain (thinned to
    nearly independent samples) against the exact conditional marginal, chi^2 over 20 bins. Power:
    lam 10 % off moves the expected chi^2 by ~80, kappa 20 % off by ~700."""
    couplings = block_couplings(2, 1.0, -4.0, 2.0)
    Phi = 0.5
    kern = _Kernel(np.full((2, 2), Phi), 2, couplings, seed=5, step=1.2)
    thin, n = 4, 30000
    samples = np.empty(n)
    for i in range(n):
        phi = kern.run(thin)
        samples[i] = phi[0, 0]
    assert abs(phi.sum() - 4 * Phi) < 1e-12
    edges = np.linspace(Phi - 3, Phi + 3, 21)
    edges[0], edges[-1] = -np.inf, np.inf
    p = _exact_marginal_2x2(Phi, couplings, np.clip(edges, Phi - 4.5, Phi + 4.5))
    counts = np.histogram(samples, edges)[0]
    ok = n * p > 5
    chi2 = np.sum((counts[ok] - n * p[ok]) ** 2 / (n * p[ok]))
    # the 1e-4 quantile of chi^2 with ~20 degrees of freedom is ~52; the thinned samples are nearly
    # independent (tau_int < 0.8, checked), which the chi^2 assumes
    assert chi2 < 52, (chi2, counts, n * p)
    assert tau_int(samples)[0] < 0.8


def test_constrained_moves_sample_the_gaussian_conditional_between_blocks():
    """Gaussian theory (lam = 0) on 4x4 with four 2x2 blocks (both colours, links between blocks): the
    conditional given the block sums is Gaussian with mean Sigma C^T (C Sigma C^T)^-1 c and covariance
    Sigma - Sigma C^T (C Sigma C^T)^-1 C Sigma; the chain's <phi_x^2> and <phi_x phi_{x+e0}> at every site
    agree within 4.5 standard errors (Gamma-method errors)."""
    L, kappa, m2 = 4, 1.0, 0.3
    couplings = block_couplings(2, kappa, m2, 0.0)
    V = L * L
    # S = 1/2 phi^T Q phi
    idx = np.arange(V).reshape(L, L)
    Q = np.zeros((V, V))
    for x in range(L):
        for y in range(L):
            i = idx[x, y]
            Q[i, i] += 2 * couplings[1]
            for j in (idx[(x + 1) % L, y], idx[x, (y + 1) % L]):
                Q[i, j] -= kappa
                Q[j, i] -= kappa
    Sigma = np.linalg.inv(Q)
    C = np.zeros((4, V))
    for x in range(L):
        for y in range(L):
            C[(x // 2) * 2 + y // 2, idx[x, y]] = 1.0
    phi0 = np.random.default_rng(2).normal(size=(L, L))
    c = C @ phi0.ravel()
    G = Sigma @ C.T @ np.linalg.inv(C @ Sigma @ C.T)
    mu = G @ c
    cov = Sigma - G @ C @ Sigma
    second = cov + np.outer(mu, mu)
    want_sq = np.diag(second)
    shift = idx[(np.arange(L)[:, None] + 1) % L, np.arange(L)[None, :]].ravel()
    want_link = second[np.arange(V), shift]
    kern, n = _Kernel(phi0, 2, couplings, seed=9, step=1.2), 6000
    sq, link = np.empty((n, V)), np.empty((n, V))
    for i in range(n):
        phi = kern.run(2)
        f = phi.ravel()
        sq[i], link[i] = f * f, f * f[shift]
    np.testing.assert_allclose(C @ phi.ravel(), c, atol=1e-12)
    for got, want in ((sq, want_sq), (link, want_link)):
        for s in range(V):
            m, e = mean_error(got[:, s])[:2]
            assert abs(m - want[s]) < 4.5 * e, (s, m, want[s], e)


def _grids(size):
    return [g for g in ([size, 1], [1, size], [2, size // 2]) if g[0] * g[1] == size and size % g[0] == 0]


@pytest.mark.mpi
def test_upscaling_plus_refinement_is_bitwise_independent_of_the_process_grid(comm):
    r = np.random.default_rng(7)
    coarse = r.normal(size=(2, 8, 8))
    model = InverseRG(b=2, size=6, noise=True)
    model.f[0] = r.normal(size=(6, 6)) * 0.2
    model.sigma = 0.4
    opts = dict(constrained=3, relax=2, step=1.1, hits=2, cluster="swendsen-wang", cluster_every=1, seed=4)

    def chain(lat):
        fine, up = model.upscale(lat, np.stack([lat.local_block(c) for c in coarse]), seed=11, first_config=5,
                                 level=1)
        ref = Refiner(fine, 2, 1.0, -0.95, 0.7, 0.0, **opts)
        return fine, np.stack([ref.refine(u, 5 + i, 1) for i, u in enumerate(up)])

    _, serial = chain(_self_lattice((8, 8)))
    for grid in _grids(comm.size):
        fine, local = chain(qftml.Lattice((8, 8), comm=comm, grid=grid))
        assert np.array_equal(local, np.stack([fine.local_block(s) for s in serial])), grid


def test_refined_gaussian_upscaling_is_the_exact_propagator_at_every_momentum():
    """Exact Gaussian draws at L = 16 (m^2 = 0.2), blocked to 8, upscaled by the crude piecewise-constant
    inverse (k = b = 2, no noise), then 40 block-constrained sweeps: a draw of the conditional given the
    block field of an exact L = 16 draw is an exact L = 16 draw, so <|phi(k)|^2>/V = 1/K(k) at every k
    (chi^2 over the 129 independent non-zero momenta, and every |z| < 4.5). Without refinement it fails badly."""
    L, kappa, m2, n = 16, 1.0, 0.2, 400
    K = gaussian_kernel((L, L), kappa, 0.5 * (m2 + 4 * kappa))
    z = np.fft.fftn(np.random.default_rng(12).normal(size=(n, L, L)), axes=(1, 2))
    draws = np.fft.ifftn(z / np.sqrt(K), axes=(1, 2)).real
    coarse = block_ensemble(_self_lattice((L, L)), draws, 2)
    model = InverseRG.exact_right_inverse(2, 2)
    fine, up = model.upscale(_self_lattice((L // 2, L // 2)), coarse)
    ref = Refiner(fine, 2, kappa, m2, 0.0, constrained=40, step=1.5, seed=1)
    refined = np.stack([ref.refine(u, i, 1) for i, u in enumerate(up)])

    kx, ky = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    own = (kx * L + ky).ravel()
    partner = (((-kx) % L) * L + (-ky) % L).ravel()
    real = own == partner                    # phi(k) real: |phi(k)|^2 / V is chi^2_1, sd = sqrt(2) mean
    half = (own <= partner) & (own != 0)     # one of each pair k, -k; k = 0 is the block field, exact anyway

    def zscores(cfgs):
        power = (np.abs(np.fft.fftn(cfgs, axes=(1, 2))) ** 2 / L ** 2).reshape(len(cfgs), -1)
        # independent draws: the exact sd of the mean is (1 or sqrt 2) / K / sqrt(n)
        exact = 1 / K.ravel()
        return (power.mean(0) - exact) / (exact * np.where(real, np.sqrt(2), 1) / np.sqrt(len(cfgs)))

    zs = zscores(refined)[half]
    assert np.abs(zs).max() < 4.5, np.abs(zs).max()
    assert abs(np.mean(zs ** 2) - 1) < 5 * np.sqrt(2 / half.sum()), np.mean(zs ** 2)
    assert np.mean(zscores(up)[half] ** 2) > 50                             # the unrefined upscaling is far off


def test_irg_refined_end_to_end_and_direct_seeds_per_size(tmp_path):
    """A tiny `qftml irg` run with method = 'refined' (constrained + unconstrained sweeps per level): level
    files record the method, the exponents come from the measured levels (no single zero-mode gain), and
    the direct chains of the two sizes run on their own streams derive_seed(seed, 'direct_chain', L)."""
    import h5py

    from qftml.cli import main
    from qftml.io.ensembles import read_attrs, read_observables

    cfg = tmp_path / "irg.toml"
    cfg.write_text(f"""
[lattice]
shape = [8, 8]
[action]
mu2 = -0.94
[sampler]
sweeps = 2000
thermalize = 200
every = 10
seed = 2
cluster = "swendsen-wang"
[irg]
levels = 2
upscale_configs = 3
n_bins = 5
method = "refined"
refine_sweeps = 2
relax_sweeps = 2
plots = false
[output]
path = "{tmp_path / 'r.h5'}"
""")
    assert main(["irg", str(cfg), "--quiet"]) == 0
    attrs = read_attrs(str(tmp_path / "r_L32.h5"))
    assert attrs["sampler"]["method"] == "refined" and attrs["sampler"]["relax_sweeps"] == 2
    assert len(read_observables(str(tmp_path / "r_L32.h5"))["m"]) == 3
    seeds = {L: read_attrs(str(tmp_path / f"r_direct_L{L}.h5"))["seed"] for L in (4, 8)}
    assert seeds == {L: rng.derive_seed(2, "direct_chain", L) for L in (4, 8)}
    with h5py.File(tmp_path / "r.h5", "r") as f:
        methods = [e[1].decode() for e in f["exponents"][:2]]
        assert methods == ["upscaled, 3 configs"] * 2


def test_relax_chain_false_carries_the_constrained_configuration():
    """irg.relax_chain = false: the configuration carried to the next level keeps the block sums of the
    inverse step (only constrained sweeps), the level's output is a relaxed copy of exactly that one."""
    from qftml.rg.pipeline import _refine_level

    lat = _self_lattice((8, 8))
    phi = np.random.default_rng(3).normal(size=(8, 8))
    ref = Refiner(lat, 2, 1.0, -0.95, 0.7, constrained=3, relax=4, seed=2)
    out, kept = _refine_level(ref, phi, 7, 1, relax_chain=False)
    np.testing.assert_allclose(block_local(kept[0], 2), block_local(phi, 2), atol=1e-14)
    assert ref.relax == 4 and not np.allclose(out[0], kept[0])
    np.testing.assert_array_equal(out[0], ref.relax_sweeps(kept[0], 4, 7, 1))
    both, same = _refine_level(ref, phi, 7, 1, relax_chain=True)
    np.testing.assert_array_equal(both, same)
    np.testing.assert_array_equal(both, out)             # the same streams: relaxed(constrained(phi))
