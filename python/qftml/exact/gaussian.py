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
