"""Exact results of the 2D Ising model (test oracles, DESIGN 4): Kaufman's finite torus, Onsager's limit.

Convention of qftml's `ising` field: S = -beta sum_<xy> s_x s_y, nearest-neighbour links of the
periodic L0 x L1 lattice counted once (2 V links), s = +-1, so

    ln Z(beta),   E(beta) = <sum_<xy> s_x s_y> = d ln Z / d beta,
    energy per link e = -E / (2 V)        (the coupling J = 1 is the unit of energy).

Kaufman (Phys. Rev. 76, 1232 (1949)), in the form of Ferdinand and Fisher (Phys. Rev. 185, 832
(1969)), for an n x m torus at K = beta:

    Z = 1/2 (2 sinh 2K)^{nm/2} (Z1 + Z2 + Z3 + Z4),
    Z1 = prod_{r=0}^{n-1} 2 cosh(m g_{2r+1} / 2),   Z2 = prod_{r=0}^{n-1} 2 sinh(m g_{2r+1} / 2),
    Z3 = prod_{r=0}^{n-1} 2 cosh(m g_{2r}   / 2),   Z4 = prod_{r=0}^{n-1} 2 sinh(m g_{2r}   / 2),
    cosh g_l = cosh 2K coth 2K - cos(pi l / n)  (l >= 1),   g_0 = 2K + ln tanh K  (signed).

g_0 changes sign at beta_c (Z4 vanishes there), so everything is evaluated in scaled form with
explicit signs and the derivative d ln Z / dK is analytic (product rule), finite also at beta_c.

Onsager (infinite lattice), energy per site u = -coth 2K [1 + (2/pi)(2 tanh^2 2K - 1) K1(k)],
k = 2 sinh 2K / cosh^2 2K, K1 the complete elliptic integral of the first kind; per link u/2.

Exports:
    BETA_C                              ln(1 + sqrt 2) / 2
    kaufman_torus(shape, beta) -> dict  logZ, E = <sum s s>, e_link = -E/(2V), for an L0 x L1 torus
    onsager_energy_per_link(beta)       infinite-volume energy per link, -sqrt(2)/2 at beta_c
    ising_enumeration(shape, beta, h=0.0)   exact <E>, <M^2>, <|M|>, ... of a small lattice by enumeration
"""
from __future__ import annotations

import itertools

import numpy as np
from scipy.special import ellipkm1

BETA_C = float(np.log(1.0 + np.sqrt(2.0)) / 2.0)


def _log2cosh(x):
    ax = np.abs(x)
    return ax + np.log1p(np.exp(-2.0 * ax))


def _log2sinh_pos(x):
    """ln(2 sinh x) for x > 0."""
    return x + np.log1p(-np.exp(-2.0 * x))


def kaufman_torus(shape, beta: float) -> dict:
    """Exact ln Z and <sum_<xy> s_x s_y> of the periodic 2D Ising model (see module docstring).

    shape = (L0, L1); the result is symmetric in L0 <-> L1 (isotropic couplings).
    """
    if len(shape) != 2:
        raise ValueError(f"Kaufman's solution is for 2D lattices, got shape {tuple(shape)}")
    n, m = (int(L) for L in shape)
    K = float(beta)
    if not (K > 0.0):
        raise ValueError(f"beta must be positive, got {beta}")
    s2, c2 = np.sinh(2 * K), np.cosh(2 * K)
    c = c2 * c2 / s2                      # cosh 2K coth 2K
    dc = 2 * c2 - 2 * c2 / (s2 * s2)      # its K-derivative

    def gammas(ls):
        g = np.arccosh(c - np.cos(np.pi * ls / n))
        return g, dc / np.sinh(g)

    # Z1, Z2: odd l, all g_l > 0.
    g, dg = gammas(2 * np.arange(n) + 1)
    x, dx = m * g / 2, m * dg / 2
    terms = [  # (log of a positive scale, bracket value, bracket K-derivative): Z_i = e^log * value
        (np.sum(_log2cosh(x)), 1.0, np.sum(np.tanh(x) * dx)),
        (np.sum(_log2sinh_pos(x)), 1.0, np.sum(dx / np.tanh(x))),
    ]
    # Z3, Z4: even l; l = 0 uses the signed g_0.
    g0 = 2 * K + np.log(np.tanh(K))
    dg0 = 2 + 2 / s2
    g, dg = gammas(2 * np.arange(1, n))
    x, dx = m * g / 2, m * dg / 2
    x0, dx0 = m * g0 / 2, m * dg0 / 2
    log_rest_c, dlog_rest_c = np.sum(_log2cosh(x)), np.sum(np.tanh(x) * dx)
    log_rest_s, dlog_rest_s = np.sum(_log2sinh_pos(x)), np.sum(dx / np.tanh(x))
    terms.append((log_rest_c + _log2cosh(x0), 1.0, dlog_rest_c + np.tanh(x0) * dx0))
    # Z4 = 2 sinh(x0) * R = e^{|x0| + log R} * sgn(x0)(1 - e^{-2|x0|}); differentiate the bracket explicitly.
    a0 = abs(x0)
    e = np.exp(-2 * a0)
    val4 = np.sign(x0) * (1 - e)
    dval4 = dx0 * (1 + e) + val4 * dlog_rest_s   # d/dK [2 sinh(x0) R] / e^{|x0| + log R}
    terms.append((log_rest_s + a0, val4, None, dval4))

    shift = max(t[0] for t in terms)
    Zsum = 0.0
    dZsum = 0.0
    for t in terms:
        scale = np.exp(t[0] - shift)
        if len(t) == 3:  # bracket 1, derivative of the log given
            Zsum += scale
            dZsum += scale * t[2]
        else:
            Zsum += scale * t[1]
            dZsum += scale * t[3]
    V = n * m
    log_pref = -np.log(2.0) + 0.5 * V * np.log(2 * s2)
    dlog_pref = V * c2 / s2
    logZ = log_pref + shift + np.log(Zsum)
    E = dlog_pref + dZsum / Zsum
    return {"logZ": float(logZ), "E": float(E), "e_link": float(-E / (2 * V))}


def onsager_energy_per_link(beta: float) -> float:
    """Infinite-lattice energy per link -<s_x s_y> (Onsager)."""
    K = float(beta)
    s2, c2 = np.sinh(2 * K), np.cosh(2 * K)
    one_minus_k2 = (s2 - 1) ** 2 * (c2 * c2 + 2 * s2) / c2 ** 4   # 1 - k^2 without cancellation
    factor = 2 * np.tanh(2 * K) ** 2 - 1
    # At beta_c the factor vanishes and K1 diverges logarithmically: the product is 0 there.
    elliptic = 0.0 if one_minus_k2 == 0.0 else factor * ellipkm1(one_minus_k2)
    u = -1 / np.tanh(2 * K) * (1 + 2 / np.pi * elliptic)
    return float(u / 2)


def ising_enumeration(shape, beta, h=0.0):
    """Exact averages of the Ising model S = -beta sum_<xy> s_x s_y - h sum_x s_x by enumeration.

    Returns a dict with E (= <sum_links s s>, nearest-neighbour links counted once), M2 = <M^2>,
    absM = <|M|>, M4 = <M^4>, logZ. Feasible up to 16-20 sites.
    """
    V = int(np.prod(shape))
    if V > 24:
        raise ValueError(f"enumeration of 2^{V} states is too large")
    states = np.array(list(itertools.product([-1.0, 1.0], repeat=V))).reshape((-1,) + tuple(shape))
    links = sum((states * np.roll(states, -1, axis=1 + mu)).reshape(len(states), -1).sum(1)
                for mu in range(len(shape)))
    M = states.reshape(len(states), -1).sum(1)
    logw = beta * links + h * M
    shift = logw.max()
    wgt = np.exp(logw - shift)
    Z = wgt.sum()
    avg = lambda x: float((wgt * x).sum() / Z)  # noqa: E731
    return {"E": avg(links), "M2": avg(M ** 2), "absM": avg(np.abs(M)), "M4": avg(M ** 4),
            "logZ": float(np.log(Z) + shift)}
