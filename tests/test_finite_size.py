"""qftml.stats.finite_size: reweighting in mu2, Binder crossing, ESS window, flow and FSS slopes,
against exact results (synthetic series with known answers, exact Gaussian draws)."""
import numpy as np
import pytest

from qftml.exact import gaussian_kernel
from qftml.stats import finite_size as fs
from qftml.stats.errors import jackknife


def _series(m, sum_phi2, mu2, L=4, name="s"):
    m = np.asarray(m, dtype=float)
    return fs.Series(name, {"abs_m": np.abs(m), "m2": m ** 2, "m4": m ** 4, "sum_phi2": sum_phi2}, L * L, L, mu2)


def _two_class(n_a, n_b, mu2):
    """n_a configurations with m = 1, sum_phi2 = 0 and n_b with m = 3, sum_phi2 = 2: reweighted by x =
    mu2' - mu2 the fraction of the second class is p = n_b e^-x / (n_a + n_b e^-x), and
    U(p) = 1 - (1 + 80 p) / (3 (1 + 8 p)^2)."""
    return _series([1.0] * n_a + [3.0] * n_b, [0.0] * n_a + [2.0] * n_b, mu2)


def _binder_of_fraction(p):
    return 1 - (1 + 80 * p) / (3 * (1 + 8 * p) ** 2)


def test_binder_crossing_of_series_with_a_known_crossing():
    """The large series is a 50/50 mixture with constant sum_phi2 (U = 34/75 at every mu2); the small
    one reaches p = 1/2 at x = ln(n_b / n_a), so the crossing is at mu2_0 + ln 1.5 (the other root,
    p = 1/82, lies at x = ln(81 * 1.5), outside the window)."""
    mu2_0 = -0.9
    small = _two_class(100, 150, mu2_0)
    large = _series([1.0, 3.0] * 60, np.full(120, 5.0), mu2_0)
    x = np.linspace(-0.5, 0.5, 7)
    u_small = [fs.moments(small, xi)["U"] for xi in x]
    p = 150 * np.exp(-x) / (100 + 150 * np.exp(-x))
    np.testing.assert_allclose(u_small, _binder_of_fraction(p), rtol=1e-13)
    assert all(abs(fs.moments(large, xi)["U"] - 34 / 75) < 1e-14 for xi in x)
    got = fs.binder_crossing(small, large, mu2_0, window=0.6)
    assert abs(got - (mu2_0 + np.log(1.5))) < 1e-9
    # no crossing inside a window that excludes it: NaN, not a wrong number
    assert np.isnan(fs.binder_crossing(small, large, mu2_0, window=0.3))


def test_reweighted_moments_equal_the_weighted_averages():
    rng = np.random.default_rng(4)
    m = rng.normal(0.3, 0.2, 500)
    s2 = rng.normal(40.0, 3.0, 500)
    series = _series(m, s2, -0.9, L=8)
    shift = 0.07
    w = np.exp(-shift * s2 / 2)
    am, m2, m4 = (np.average(q, weights=w) for q in (np.abs(m), m ** 2, m ** 4))
    got = fs.moments(series, shift)
    for key, ref in (("abs_m", am), ("m2", m2), ("m4", m4), ("chi", 64 * (m2 - am ** 2)),
                     ("U", 1 - m4 / (3 * m2 ** 2)), ("ess", w.sum() ** 2 / (w ** 2).sum())):
        assert np.isclose(got[key], ref, rtol=1e-12), key
    # a subset (jackknife sample) is reweighted on its own
    idx = np.arange(100, 500)
    assert np.isclose(fs.moments(series, shift, idx)["m2"], np.average(m[idx] ** 2, weights=w[idx]), rtol=1e-12)


def _gaussian_ensemble(L, w, a, n, seed):
    """Independent exact draws of the Gaussian theory (FFT of white noise / sqrt K)."""
    K = gaussian_kernel((L, L), w, a)
    z = np.fft.fftn(np.random.default_rng(seed).normal(size=(n, L, L)), axes=(1, 2))
    return np.fft.ifftn(z / np.sqrt(K), axes=(1, 2)).real


def test_mu2_reweighting_matches_the_exact_gaussian_susceptibility():
    """Exact Gaussian draws (lam = 0): <m^2>(mu2') = 1 / (V K(0)) = 1 / (V mu2'), reweighted from
    mu2 = 0.3 to 0.27 and 0.33, within 4 jackknife errors; U of a Gaussian zero mode is 0."""
    L, mu2 = 8, 0.3
    cfg = _gaussian_ensemble(L, 1.0, 0.5 * (mu2 + 4.0), 6000, 11)
    m = cfg.mean(axis=(1, 2))
    series = _series(m, np.sum(cfg ** 2, axis=(1, 2)), mu2, L=L)
    for target in (0.27, 0.3, 0.33):
        val, err, _ = jackknife(lambda idx: fs.moments(series, target - mu2, idx[0])["m2"], [series.n])
        assert abs(val - 1 / (L * L * target)) < 4 * err, (target, val, err)
        u, du, _ = jackknife(lambda idx: fs.moments(series, target - mu2, idx[0])["U"], [series.n])
        assert abs(u) < 4 * du


def test_ess_window_is_the_root_of_its_definition():
    rng = np.random.default_rng(5)
    series = _series(rng.normal(0, 0.3, 2000), rng.normal(100.0, 8.0, 2000), -0.95)
    fraction = 0.3

    def min_ess(d):
        return min(fs.moments(series, s * d)["ess"] for s in (-1, 1))

    d = fs.ess_window(series, series.mu2, fraction)
    assert 0 < d < 1
    assert abs(min_ess(d) - fraction * series.n) < 1e-6 * series.n
    assert min_ess(0.99 * d) > fraction * series.n > min_ess(1.01 * d)
    # bounds: no constraint -> the whole window; an unreachable one -> 0
    assert fs.ess_window(series, series.mu2, 0.0) == 1.0
    assert fs.ess_window(series, series.mu2, 1.5) == 0.0


def test_flow_of_an_ensemble_onto_itself_is_the_identity():
    """Binder matching of a series with itself: mu2' = mu2 (slope 1), where U is monotonic."""
    small = _two_class(100, 150, -0.9)
    grid = np.linspace(-1.2, -0.6, 7)
    np.testing.assert_allclose(fs.flow(small, small, grid, (-1.3, -0.5)), grid, atol=1e-9)
    assert abs(fs.flow_slope(small, small, grid, (-1.3, -0.5)) - 1.0) < 1e-8


@pytest.mark.parametrize("exponent", [1.75, -0.125, 2.0])
def test_fss_slope_of_an_exact_power_law(exponent):
    L = np.array([8, 16, 32, 64, 128])
    assert abs(fs.fss_slope(L, 2.5 * L ** exponent) - exponent) < 1e-12
