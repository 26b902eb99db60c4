"""Exact results used as test oracles and in the docs (DESIGN 4).

Modules: qftml.exact.gaussian (propagator, kernel, ln Z of Gaussian actions, also complex mass),
qftml.exact.ising (Kaufman's finite torus, Onsager's limit, enumeration of small lattices),
qftml.exact.network (ln Z of small phi^4 networks: Gaussian integral, sums over binary states).
Their functions are re-exported here: `from qftml import exact; exact.gaussian_log_z(...)`.
"""
from qftml.exact.gaussian import (gaussian_kernel, gaussian_log_z, gaussian_ml_tied, gaussian_propagator,
                                  gaussian_samples, momenta)
from qftml.exact.ising import BETA_C, ising_enumeration, kaufman_torus, onsager_energy_per_link

__all__ = ["momenta", "gaussian_kernel", "gaussian_propagator", "gaussian_log_z", "gaussian_samples",
           "gaussian_ml_tied", "BETA_C",
           "kaufman_torus", "onsager_energy_per_link", "ising_enumeration"]
