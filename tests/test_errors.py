"""qftml.stats.errors: the one error-analysis layer, against independent computations."""
import numpy as np
import pytest

from qftml.stats import errors as E


def ar1(n, rho, seed):
    rng = np.random.default_rng(seed)
    x = np.empty(n)
    x[0] = rng.normal()
    for i in range(1, n):
        x[i] = rho * x[i - 1] + np.sqrt(1 - rho * rho) * rng.normal()
    return x


def test_gamma_method_error_of_an_ar1_chain_matches_its_exact_tau_int():
    # AR(1): tau_int = (1 + rho) / (2 (1 - rho)); error of the mean sqrt(2 tau_int / n)
    rho, n = 0.8, 200_000
    x = ar1(n, rho, 1)
    mean, err = E.mean_error(x)
    tau, dtau = E.tau_int(x)
    exact_tau = (1 + rho) / (2 * (1 - rho))
    assert abs(tau - exact_tau) < 4 * dtau
    assert err == pytest.approx(np.sqrt(2 * exact_tau / n), rel=0.1)
    assert abs(mean) < 4 * err


def test_replicas_pool_like_one_chain_of_independent_pieces():
    a, b = ar1(20_000, 0.5, 2), ar1(30_000, 0.5, 3)
    m, e = E.mean_error(np.concatenate([a, b]), replica_lengths=[len(a), len(b)])
    assert m == pytest.approx(np.concatenate([a, b]).mean(), rel=1e-12)
    tau = 1.5  # (1 + 0.5) / (2 * 0.5)
    assert e == pytest.approx(np.sqrt(2 * tau / 50_000), rel=0.15)
    with pytest.raises(ValueError, match="do not add up"):
        E.mean_error(a, replica_lengths=[10, 10])


def test_constant_series_has_zero_error_and_tau_one_half():
    assert E.mean_error(np.full(50, 2.5)) == (2.5, 0.0)
    assert E.tau_int(np.ones(10)) == (0.5, 0.0)


def test_jackknife_of_the_mean_is_the_standard_error_and_variances_add():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=4000), rng.normal(size=6000)
    value, err, samples = E.jackknife(lambda idx: x[idx[0]].mean() if idx[0] is not None else x.mean(), [len(x)],
                                      n_bins=4000)
    assert err == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)), rel=1e-9)   # delete-one = exact
    def diff(idx):
        xs = x if idx[0] is None else x[idx[0]]
        ys = y if idx[1] is None else y[idx[1]]
        return xs.mean() - ys.mean()
    v2, e2, _ = E.jackknife(diff, [len(x), len(y)], n_bins=50)
    assert v2 == pytest.approx(x.mean() - y.mean())
    assert e2 == pytest.approx(np.hypot(x.std() / np.sqrt(4000), y.std() / np.sqrt(6000)), rel=0.3)


def test_jackknife_bins_stay_inside_replicas():
    bins = E.jackknife_bins([10, 25, 5], 8)
    edges = {0, 10, 35, 40}
    assert bins[0][0] == 0 and bins[-1][1] == 40
    assert all(b[1] == c[0] for b, c in zip(bins, bins[1:]))
    assert not any(a < e < b for a, b in bins for e in edges)


def test_complex_jackknife_errors_split_real_and_imaginary_parts():
    s = np.array([1 + 2j, 3 + 2j, 2 + 5j])
    e = E.jackknife_error(s)
    assert e.real == pytest.approx(E.jackknife_error(s.real))
    assert e.imag == pytest.approx(E.jackknife_error(s.imag))


@pytest.mark.parametrize("mean, err, text", [(1.23456, 0.0123, "1.235(12)"), (-0.5, 0.25, "-0.50(25)"),
                                             (12345.0, 67.0, "12345(67)"), (1.0, 0.0, "1"),
                                             (2.0, float("nan"), "2")])
def test_format_value(mean, err, text):
    assert E.format_value(mean, err) == text
