"""Exact results used as test oracles and in the docs (DESIGN 4).

Gaussian actions (b = 0, homogeneous): S = 1/2 phi^T K phi - sum_{links} ... with
    K(k) = 2a - 2 sum_l c_l cos(k . e_l)          (l over unit vectors and extra offsets)
    <phi_x phi_y> = (1/V) sum_k cos(k.(x-y)) / K(k)
    ln Z = (V/2) ln(2 pi) - (1/2) sum_k ln K(k)     (with r = 0)
Complex a (reweighting to a complex mass) continues these formulas analytically.

Exports:
    momenta(shape)                                the lattice momenta k_mu = 2 pi n_mu / L_mu
    gaussian_kernel(shape, w, a, extra_offsets=(), g=0.0)  K(k) on the momentum grid
    gaussian_propagator(shape, w, a, extra_offsets=(), g=0.0)  G(x) = <phi_0 phi_x>, array of `shape`
    gaussian_log_z(shape, w, a, extra_offsets=(), g=0.0, r=0.0)  ln Z (complex if a is complex)
    gaussian_samples(shape, w, a, n, seed, r=0.0) -> (n, *shape)   exact independent draws of the
                                  homogeneous Gaussian (engine Philox, purpose "gaussian_samples",
                                  counter (site, draw)): phi = -r/K(0) + IFFT(FFT(eta) / sqrt(K))
    gaussian_ml_tied(shape, phi2, link, phi=0.0) -> (w, a, r)   the maximum-likelihood tied
                                  couplings of data with per-site moments <phi^2>, <phi_x phi_{x+mu}>
                                  (averaged over mu) and <phi>: moment matching with the exact
                                  propagator (the likelihood of an exponential family)
"""
from __future__ import annotations

import numpy as np


def momenta(shape):
    return np.meshgrid(*[2 * np.pi * np.arange(L) / L for L in shape], indexing="ij")


def gaussian_kernel(shape, w, a, extra_offsets=(), g=0.0):
    """K(k) = 2a - 2 w sum_mu cos k_mu - 2 g sum_e cos(k.e): the Fourier transform of the quadratic form."""
    k = momenta(shape)
    K = 2 * a - 2 * w * sum(np.cos(km) for km in k)
    for e in extra_offsets:
        K = K - 2 * g * np.cos(sum(ei * km for ei, km in zip(e, k)))
    if np.any(np.real(K) <= 0):
        raise ValueError("Gaussian kernel not positive definite: exp(-S) is not normalisable")
    return K


def gaussian_propagator(shape, w, a, extra_offsets=(), g=0.0):
    """G(x) = <phi_0 phi_x> = (1/V) sum_k e^{i k.x} / K(k), for r = 0."""
    K = gaussian_kernel(shape, w, a, extra_offsets, g)
    G = np.fft.ifftn(1.0 / K)
    return G.real if np.isrealobj(K) else G


def gaussian_log_z(shape, w, a, extra_offsets=(), g=0.0, r=0.0):
    """ln Z = (V/2) ln(2 pi) - (1/2) sum_k ln K(k) + (1/2) r^2 V / K(0)   (homogeneous r)."""
    K = gaussian_kernel(shape, w, a, extra_offsets, g)
    V = int(np.prod(shape))
    return 0.5 * V * np.log(2 * np.pi) - 0.5 * np.sum(np.log(K)) + 0.5 * r * r * V / K.flat[0]


def gaussian_samples(shape, w, a, n, seed, r=0.0):
    """n exact independent configurations of S = sum (a phi^2 + r phi) - w sum_links phi phi (serial)."""
    from qftml.engine import rng

    shape = tuple(int(s) for s in shape)
    K = gaussian_kernel(shape, w, a)
    V = int(np.prod(shape))
    index = np.arange(V, dtype=np.uint64)
    out = np.empty((int(n),) + shape)
    for i in range(int(n)):
        eta = rng.normal(seed, "gaussian_samples", index, i).reshape(shape)
        out[i] = np.fft.ifftn(np.fft.fftn(eta) / np.sqrt(K)).real - r / K.flat[0]
    return out


def gaussian_ml_tied(shape, phi2, link, phi=0.0):
    """(w, a, r) with <phi^2> = phi2, <phi_x phi_{x+mu}> = link (mean over mu), <phi> = phi under
    the homogeneous Gaussian: G(0) = phi2 - phi^2, G(e_mu) = link - phi^2, r = -K(0) phi."""
    from scipy.optimize import root

    d = len(shape)
    c0, c1 = phi2 - phi * phi, link - phi * phi
    unit = tuple([1] + [0] * (d - 1))

    def eqs(p):
        w, a = p
        try:
            G = gaussian_propagator(shape, w, a)
        except ValueError:
            return [1e3, 1e3]
        return [G.flat[0] - c0, G[unit] - c1]

    a0 = 0.5 / c0
    sol = root(eqs, [0.0, a0], method="hybr", options={"xtol": 1e-14})
    if not sol.success:
        raise ValueError(f"no Gaussian with <phi^2>_c = {c0}, <phi phi>_c = {c1}: {sol.message}")
    w, a = map(float, sol.x)
    return w, a, -float(gaussian_kernel(shape, w, a).flat[0]) * phi
