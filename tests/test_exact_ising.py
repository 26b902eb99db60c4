"""Kaufman's finite-torus Ising solution against brute-force enumeration, and its Onsager limit."""
import numpy as np
import pytest

from qftml.exact import ising_enumeration
from qftml.exact.ising import BETA_C, kaufman_torus, onsager_energy_per_link


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (5, 3), (4, 3), (2, 3)])  # <= 16 sites: fast enumeration
@pytest.mark.parametrize("beta", [0.1, 0.3, BETA_C, 0.6, 1.2])
def test_kaufman_matches_enumeration(shape, beta):
    exact = kaufman_torus(shape, beta)
    enum = ising_enumeration(shape, beta)
    assert exact["logZ"] == pytest.approx(enum["logZ"], rel=1e-12, abs=1e-12)
    assert exact["E"] == pytest.approx(enum["E"], rel=1e-11, abs=1e-11)
    assert exact["e_link"] == pytest.approx(-enum["E"] / (2 * np.prod(shape)), rel=1e-11)


def test_kaufman_energy_is_derivative_of_log_z():
    # independent of the analytic derivative: central difference of ln Z on a large lattice
    for beta in (0.35, BETA_C, 0.5):
        h = 1e-5
        num = (kaufman_torus((64, 48), beta + h)["logZ"] - kaufman_torus((64, 48), beta - h)["logZ"]) / (2 * h)
        assert kaufman_torus((64, 48), beta)["E"] == pytest.approx(num, rel=1e-7)


def test_kaufman_approaches_onsager():
    assert onsager_energy_per_link(BETA_C) == pytest.approx(-np.sqrt(2) / 2, rel=1e-12)
    for beta in (0.3, 0.6):  # off-critical: finite-size corrections are exponentially small
        assert kaufman_torus((256, 256), beta)["e_link"] == pytest.approx(onsager_energy_per_link(beta), rel=1e-12)
    # at beta_c the correction is O(1/L) and shrinks with L
    d = [abs(kaufman_torus((L, L), BETA_C)["e_link"] - onsager_energy_per_link(BETA_C)) for L in (16, 64, 256)]
    assert d[0] > d[1] > d[2] > 0
    assert d[2] < 2e-3


def test_kaufman_rejects_bad_input():
    with pytest.raises(ValueError):
        kaufman_torus((4, 4, 4), 0.3)
    with pytest.raises(ValueError):
        kaufman_torus((4, 4), -0.1)
