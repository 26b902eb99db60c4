"""The exact 1D sampler and integrals of exp(-alpha x^2 - beta x^4 + j x) (cpp/kernels/quartic_density.hpp).

Integrals against mpmath at 20 digits; draws against the CDF by an independent quadrature
(scipy's cumulative Simpson on a fine grid) with Kolmogorov-Smirnov tests, moments against the
exact moments within 5 standard errors, and the counter-based streams independent of batching.
"""
import mpmath
import numpy as np
import pytest
from scipy import integrate, stats

from qftml.engine import quartic

# (alpha, beta, j): single wells, double wells (alpha < 0), tilted double wells, pure quartic,
# the Gaussian limit beta -> 0, Gaussian (beta = 0), large fields and narrow wells.
CASES = [
    (1.0, 0.0, 0.3), (0.5, 1e-9, -1.2), (1.0, 1e-5, 2.0), (1.0, 0.5, 0.0), (0.0, 1.0, 0.0), (0.0, 0.01, 3.0),
    (-1.0, 0.25, 0.0), (-1.0, 0.25, 0.4), (-4.0, 0.5, 0.2), (-3.0, 0.1, -1.5), (2.0, 3.0, 25.0),
    (1.5242, 0.175, -0.9), (-0.3, 0.02, 0.05), (10.0, 0.1, 1.0), (0.0, 50.0, -5.0), (-20.0, 1.0, 0.0),
]


def _mp_integral(alpha, beta, j, k):
    f = lambda x: x ** k * mpmath.exp(-alpha * x ** 2 - beta * x ** 4 + j * x)  # noqa: E731
    # split at the stationary points so mpmath's tanh-sinh sees smooth bumps
    roots = sorted(float(r.real) for r in np.roots([4 * beta, 0, 2 * alpha, -j]) if abs(r.imag) < 1e-9) \
        if beta > 0 else [j / (2 * alpha)]
    pts = [-mpmath.inf] + [mpmath.mpf(r) for r in roots] + [mpmath.inf]
    return mpmath.quad(f, pts)


MOMENT_CASES = [CASES[i] for i in (1, 4, 9)]  # mpmath is slow: moments on a subset


@pytest.mark.parametrize("alpha,beta,j", CASES)
def test_log_integral_to_machine_precision(alpha, beta, j):
    mpmath.mp.dps = 20  # 20 digits: the reference error is < 1e-18
    logz = float(quartic.integral(alpha, beta, j)[0])
    z = _mp_integral(alpha, beta, j, 0)
    # rounding of a sum of ~100-1000 positive terms and of its log: ~1e-15 typical, 2e-14 allowed
    assert abs(logz - float(mpmath.log(z))) < 2e-14 * max(1.0, abs(logz))


@pytest.mark.parametrize("alpha,beta,j", MOMENT_CASES)
def test_moments_to_machine_precision(alpha, beta, j):
    mpmath.mp.dps = 20
    _, m1, m2, m4 = (float(x) for x in quartic.integral(alpha, beta, j))
    z = _mp_integral(alpha, beta, j, 0)
    exact = [float(_mp_integral(alpha, beta, j, k) / z) for k in (1, 2, 4)]
    scale = [np.sqrt(exact[1]), exact[1], exact[2]]  # m1 relative to the spread
    for got, want, s in zip((m1, m2, m4), exact, scale):
        assert abs(got - want) < 2e-14 * s


def test_integral_broadcasts_units_and_marks_unnormalisable():
    alpha = np.array([1.0, -1.0, 1.0, 0.0])
    beta = np.array([0.0, 0.5, -0.1, 0.0])
    j = np.array([[0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0]])
    logz, m1, m2, m4 = quartic.integral(alpha, beta, j)
    assert logz.shape == (2, 4)
    assert np.isnan(logz[:, 2:]).all() and np.isfinite(logz[:, :2]).all()
    assert quartic.valid(alpha, beta).tolist() == [True, True, False, False]
    x, _ = quartic.sample(alpha, beta, j, 1, "network_chain")
    assert np.isnan(x[:, 2:]).all() and np.isfinite(x[:, :2]).all()
    # d ln Z / d j = <x>: a central difference of the integral (independent of the moment sums)
    h = 1e-5
    lp = quartic.integral(alpha[:2], beta[:2], j[:, :2] + h)[0]
    lm = quartic.integral(alpha[:2], beta[:2], j[:, :2] - h)[0]
    assert np.allclose((lp - lm) / (2 * h), m1[:, :2], rtol=0, atol=1e-8)


def _cdf(alpha, beta, j):
    """CDF of the density by cumulative Simpson on 200001 points covering it (independent of the kernel)."""
    logz, m1, m2, _ = (float(x) for x in quartic.integral(alpha, beta, j))
    sd = np.sqrt(m2 - m1 ** 2)
    roots = [r.real for r in np.roots([4 * beta, 0, 2 * alpha, -j]) if abs(r.imag) < 1e-9] if beta > 0 else []
    lo, hi = min([m1 - 12 * sd] + roots) - 4 * sd, max([m1 + 12 * sd] + roots) + 4 * sd
    x = np.linspace(lo, hi, 200001)
    logf = -alpha * x ** 2 - beta * x ** 4 + j * x
    f = np.exp(logf - logf.max())
    c = integrate.cumulative_simpson(f, x=x, initial=0.0)
    return lambda y: np.interp(y, x, c / c[-1])


@pytest.mark.parametrize("alpha,beta,j", CASES)
def test_draws_follow_the_density(alpha, beta, j):
    n = 10000
    x, attempts = quartic.sample(alpha, beta, np.full((n, 1), j), seed=2026, purpose_name="network_chain")
    x = x[:, 0]
    assert np.isfinite(x).all()
    # KS at the 1e-3 level per case (16 cases: a false alarm has probability ~1.6%, fixed seed)
    assert stats.kstest(x, _cdf(alpha, beta, j)).pvalue > 1e-3
    _, m1, m2, m4 = (float(v) for v in quartic.integral(alpha, beta, j))
    assert abs(x.mean() - m1) < 5 * np.sqrt((m2 - m1 ** 2) / n)
    var_x2 = m4 - m2 ** 2
    assert abs((x ** 2).mean() - m2) < 5 * np.sqrt(var_x2 / n)
    # the envelope is tight: proposals per draw (a property of the rejection step, not a timing)
    assert attempts / n < 1.6


def test_draws_depend_on_their_counter_only():
    rng = np.random.default_rng(0)  # test data only, not a qftml stream
    alpha, beta = rng.uniform(-2, 2, 7), rng.uniform(0.01, 1, 7)
    j = rng.normal(0, 2, (30, 7))
    full, _ = quartic.sample(alpha, beta, j, 11, "network_chain", index0=100, step=3)
    part, _ = quartic.sample(alpha, beta, j[10:], 11, "network_chain", index0=100 + 10 * 7, step=3)
    assert np.array_equal(full[10:], part)
    other, _ = quartic.sample(alpha, beta, j, 11, "network_chain", index0=100, step=4)
    assert not np.any(other == full)
