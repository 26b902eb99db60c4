"""Exact ln Z and log-likelihoods of small phi^4 networks (test oracles of qftml.network.ais).

Exports:
    gaussian_gaussian_log_z(net)        ln Z of a gaussian-gaussian network: a Gaussian integral in
                                        N_v + N_h dimensions, S = x^T Q x / 2 + c^T x
    gaussian_gaussian_marginal(net) -> (mean, precision)   the visible marginal (a Gaussian)
    hidden_sum_log_z(net)               ln Z as the exact sum over the 2^N_h states of bernoulli hidden
                                        units, each term's visible integral in closed form (bernoulli,
                                        gaussian) or by the 1D quadrature (phi4); N_h <= 20
    visible_sum_log_z(net)              the same over 2^N_v bernoulli visible states
"""
from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def gaussian_gaussian_log_z(net) -> float:
    from qftml.network.model import joint_precision

    q = joint_precision(net)
    c = np.concatenate([net.visible.lin, net.hidden.lin])
    sign, logdet = np.linalg.slogdet(q)
    if sign <= 0:
        raise ValueError("gaussian-gaussian network: the joint precision is not positive definite")
    n = q.shape[0]
    return 0.5 * n * np.log(2 * np.pi) - 0.5 * logdet + 0.5 * c @ np.linalg.solve(q, c)


def gaussian_gaussian_marginal(net):
    """Mean and precision of p(v): precision = 2 a - W (2 m)^-1 W^T, mean = -precision^-1 (r + W s / (2 m))."""
    a, m = net.visible.quad, net.hidden.quad
    prec = np.diag(2.0 * a) - net.w @ np.diag(1.0 / (2.0 * m)) @ net.w.T
    lin = net.visible.lin + net.w @ (net.hidden.lin / (2.0 * m))
    return -np.linalg.solve(prec, lin), prec


def _states(n):
    if n > 20:
        raise ValueError(f"exact sum over 2^{n} states: at most 20 units")
    return ((np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]) & 1).astype(float)


def hidden_sum_log_z(net, chunk: int = 4096) -> float:
    if net.hidden.kind != "bernoulli":
        raise ValueError("hidden_sum_log_z needs bernoulli hidden units")
    h = _states(net.hidden.n)
    terms = []
    for i in range(0, len(h), chunk):
        hb = h[i:i + chunk]
        terms.append(-net.hidden.self_energy(hb) + net.visible.log_partition(net.visible_field(hb)).sum(axis=1))
    return float(logsumexp(np.concatenate(terms)))


def visible_sum_log_z(net) -> float:
    if net.visible.kind != "bernoulli":
        raise ValueError("visible_sum_log_z needs bernoulli visible units")
    return float(logsumexp(-net.free_energy(_states(net.visible.n))))
