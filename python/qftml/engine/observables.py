"""Per-configuration observables (DESIGN 1.2), reduced over ranks.

Exports:
    measure(field, action) -> dict   M, m, |m|, m^2, m^4, sum phi^2, sum phi^4, the action S,
                                     link sums per link type, slice sums along direction 0
    timeslice_correlator(slice_sums, volume)   C(t) = (1/V) sum_t0 s(t0) s(t0 + t) per config
    NonFiniteError                   (a ValueError) measure() of a field that is not finite, or whose
                                     per-site terms reach 2^50 (the fixed-point sums cannot hold them):
                                     a diverged chain or a damaged configuration; raised on every rank
"""
from __future__ import annotations

import numpy as np

from qftml import _core


class NonFiniteError(ValueError):
    """A configuration whose observables cannot be formed (NaN/inf or out-of-range values)."""


def measure(field, action) -> dict:
    """Observables of one configuration. Collective: one allreduce of a small vector.

    link_sums[l] = sum_x phi_x phi_{x+e_l} for the action's links (unit vectors, then extras),
    slice_sums[t] = sum of phi over the time slice x_0 = t.
    """
    raw = _core.measure(field._core, action._core)
    if not np.isfinite(raw["sum_phi2"]):  # the engine flags NaN, inf and |term| >= 2^50 anywhere (one allreduce)
        raise NonFiniteError("the field is not finite (NaN, inf, or |phi|^4 or a site's action term >= 2^50 "
                             "somewhere): its observables cannot be formed")
    volume = field.lattice.volume
    m = raw["magnetisation"] / volume
    out = {
        "M": raw["magnetisation"],
        "m": m,
        "abs_m": abs(m),
        "m2": m * m,
        "m4": m ** 4,
        "sum_phi2": raw["sum_phi2"],
        "sum_phi4": raw["sum_phi4"],
        "action": raw["action"],
        "link_sums": np.asarray(raw["link_sums"]),
        "slice_sums": np.asarray(raw["slice_sums"]),
    }
    d = field.lattice.ndim
    out["sum_links_nn"] = float(out["link_sums"][:d].sum())
    return out


def timeslice_correlator(slice_sums: np.ndarray, volume: int) -> np.ndarray:
    """C(t) = (1/V) sum_t0 s(t0) s(t0+t) for slice sums s of shape (..., L0), periodic in t."""
    s = np.asarray(slice_sums, dtype=float)
    f = np.fft.rfft(s, axis=-1)
    return np.fft.irfft(f * np.conj(f), n=s.shape[-1], axis=-1) / volume
