"""Critical behaviour from original and upscaled ensembles: reweighting in mu2, Binder crossings,
the flow of the mass coupling, finite-size-scaling fits (DESIGN 1.2, 1.7).

Conventions (homogeneous action, a = (mu2 + 2 d kappa)/2, so dS/dmu2 = sum_x phi_x^2 / 2):

    <O>(mu2') = sum_i O_i w_i / sum_i w_i,   w_i = exp(-(mu2' - mu2) sum_phi2_i / 2)
    chi = V (<m^2> - <|m|>^2),   U = 1 - <m^4> / (3 <m^2>^2)
    FSS at the critical point:   <|m|> ~ L^(-beta/nu),   chi ~ L^(gamma/nu)
    Binder matching (one RG step b):  U_{bL}(mu2') = U_L(mu2)  =>  mu2' - mu2_c = b^(-1/nu) (mu2 - mu2_c)
    so the slope lambda = d mu2' / d mu2 of the flow gives nu = ln b / ln(1 / lambda).

The weights are those of the reweighting estimator (qftml.reweighting.estimator.normalized_weights:
log-sum-exp shift, Kish ESS). Errors: the blocked jackknife of qftml.stats.errors (each series cut
into n_bins contiguous bins, much longer than tau_int; a quantity of several independent ensembles
gets the sum of the jackknife variances from deleting the bins of each ensemble in turn). Binder
crossings and the flow are roots of reweighted curves (every configuration's weight moves with
mu2), not functions of a few means, so they are jackknifed whole rather than propagated as pyerrors
derived observables (pe.roots.find_root needs the latter).

Exports:
    Series(name, obs, volume, L, mu2)  one ensemble's per-configuration |m|, m^2, m^4, sum_phi2
                                       (.rescaled(s): the same with m -> s m)
    moments(series, mu2_shift, idx=None) -> dict abs_m, m2, m4, chi, U, ess
    ess_window(series, mu2_0, ess_fraction=0.3) -> largest |mu2 - mu2_0| with ESS >= fraction * N
    binder_crossing(small, large, mu2_0, window, idx=(None, None)) -> mu2 where U_small = U_large
    flow(small_up, large, mu2_values, window_large, idx) -> mu2' with U_large(mu2') = U_small_up(mu2)
    flow_slope(small_up, large, mu2_values, window_large, idx) -> slope lambda of mu2'(mu2)
    fss_slope(L, values) -> least-squares slope of ln values vs ln L
    pair_analysis(small, large, mu2_star, b, n_bins, ess_fraction) -> dict   two neighbouring sizes:
                                       crossing, U there, nu from Binder matching, gamma/nu, beta/nu at mu2*
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from qftml.reweighting.estimator import normalized_weights
from qftml.stats.errors import jackknife


class Series:
    """Per-configuration observables of one ensemble (Markov-time order) at coupling mu2."""

    def __init__(self, name: str, obs: dict, volume: int, L: int, mu2: float):
        self.name, self.volume, self.L, self.mu2 = name, int(volume), int(L), float(mu2)
        self.abs_m = np.asarray(obs["abs_m"], dtype=float)
        self.m2 = np.asarray(obs["m2"], dtype=float)
        self.m4 = np.asarray(obs["m4"], dtype=float)
        self.sum_phi2 = np.asarray(obs["sum_phi2"], dtype=float)
        self.n = len(self.m2)

    def rescaled(self, factor: float, name=None, L=None, volume=None) -> "Series":
        """The same series with m -> factor * m (an upscaling step with zero-mode gain `factor`)."""
        out = Series.__new__(Series)
        out.__dict__.update(self.__dict__)
        out.name = name or self.name
        out.abs_m, out.m2, out.m4 = self.abs_m * factor, self.m2 * factor ** 2, self.m4 * factor ** 4
        out.L = self.L if L is None else L
        out.volume = self.volume if volume is None else volume
        return out


def _weights(series: Series, mu2_shift: float, idx):
    """Normalised weights and Kish ESS of reweighting by mu2_shift: A - S = mu2_shift sum_phi2 / 2."""
    s = series.sum_phi2 if idx is None else series.sum_phi2[idx]
    return normalized_weights(0.5 * mu2_shift * s)


def moments(series: Series, mu2_shift: float = 0.0, idx=None) -> dict:
    """Reweighted <|m|>, <m^2>, <m^4>, chi, U and the Kish ESS at mu2 = series.mu2 + mu2_shift."""
    w, ess = _weights(series, mu2_shift, idx)
    pick = (lambda a: a) if idx is None else (lambda a: a[idx])
    am, m2, m4 = (float(np.dot(w, pick(a))) for a in (series.abs_m, series.m2, series.m4))
    return {"abs_m": am, "m2": m2, "m4": m4, "chi": series.volume * (m2 - am * am),
            "U": 1.0 - m4 / (3.0 * m2 * m2), "ess": ess}


def ess_window(series: Series, mu2_0: float, ess_fraction: float = 0.3, max_window: float = 1.0) -> float:
    """Largest symmetric window d = |mu2 - mu2_0| <= max_window with min(ESS(mu2_0 - d), ESS(mu2_0 + d))
    >= ess_fraction * N: the root of (that ESS - ess_fraction * N) by brentq to 1e-12, max_window if
    the ESS stays above the bound there, 0 if it is below it already at d = 0."""
    def excess(d):
        ess = min(moments(series, mu2_0 - series.mu2 + s * d)["ess"] for s in (-1, 1))
        return ess - ess_fraction * series.n
    if excess(max_window) >= 0:
        return float(max_window)
    if excess(0.0) < 0:
        return 0.0
    return float(brentq(excess, 0.0, max_window, xtol=1e-12))


def _binder_curve(series, idx):
    return lambda mu2: moments(series, mu2 - series.mu2, None if idx is None else idx)["U"]


def binder_crossing(small: Series, large: Series, mu2_0: float, window: float, idx=(None, None)) -> float:
    """mu2 in [mu2_0 - window, mu2_0 + window] where U_small(mu2) = U_large(mu2) (NaN if none)."""
    us, ul = _binder_curve(small, idx[0]), _binder_curve(large, idx[1])
    grid = np.linspace(mu2_0 - window, mu2_0 + window, 41)
    diff = np.array([us(x) - ul(x) for x in grid])
    sign = np.nonzero(np.diff(np.sign(diff)))[0]
    if len(sign) == 0:
        return float("nan")
    k = sign[np.argmin(np.abs(grid[sign] - mu2_0))]
    return float(brentq(lambda x: us(x) - ul(x), grid[k], grid[k + 1], xtol=1e-10))


def flow(small_up: Series, large: Series, mu2_values, window_large: tuple, idx=(None, None)) -> np.ndarray:
    """mu2'(mu2): for each mu2 (coupling of the ensemble that was upscaled), the coupling of the
    direct large-lattice ensemble with the same Binder cumulant. NaN where no match in the window."""
    ul = _binder_curve(large, idx[1])
    us = _binder_curve(small_up, idx[0])
    lo, hi = window_large
    grid = np.linspace(lo, hi, 61)
    ugrid = np.array([ul(x) for x in grid])
    out = []
    for mu2 in mu2_values:
        target = us(mu2)
        diff = ugrid - target
        sign = np.nonzero(np.diff(np.sign(diff)))[0]
        if len(sign) == 0:
            out.append(np.nan)
            continue
        k = sign[0]
        out.append(brentq(lambda x: ul(x) - target, grid[k], grid[k + 1], xtol=1e-10))
    return np.array(out)


def flow_slope(small_up: Series, large: Series, mu2_values, window_large, idx=(None, None)) -> float:
    """Least-squares slope lambda of mu2'(mu2) over mu2_values."""
    mp = flow(small_up, large, mu2_values, window_large, idx)
    ok = np.isfinite(mp)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(mu2_values)[ok], mp[ok], 1)[0])


def fss_slope(L, values) -> float:
    """Slope of ln(values) against ln(L) by least squares (the FSS exponent of a power law)."""
    return float(np.polyfit(np.log(np.asarray(L, dtype=float)), np.log(np.asarray(values, dtype=float)), 1)[0])


def pair_analysis(small: Series, large: Series, mu2_star: float, b: int = 2, n_bins: int = 20,
                  ess_fraction: float = 0.3) -> dict:
    """Two direct ensembles at L/b and L (same sampling coupling mu2_0 = small.mu2 = large.mu2), the
    analysis of one size pair with blocked-jackknife errors over both (values are (value, error)):

        mu2_c, U_c     Binder crossing U_{L/b}(mu2_c) = U_L(mu2_c) and U there
        lambda, nu     slope of the Binder matching U_L(mu2') = U_{L/b}(mu2) on 9 points
                       mu2_c +- 0.8 * window(L/b); nu = ln b / ln(1/lambda)   (phenomenological RG;
                       for a linear inverse RG the upscaled L/b ensemble has the same U, so this is the flow)
        gamma_nu       d + log_b(<m^2>_L / <m^2>_{L/b}) at mu2_star   (= d - 2 log_b zeta, DESIGN 1.7)
        beta_nu        -log_b(<|m|>_L / <|m|>_{L/b}) at mu2_star
    plus L_small, L_large, window (the reweighting window: Kish ESS >= ess_fraction * N for both).
    A pair without crossing in the window gets NaN for mu2_c, U_c, lambda and nu."""
    mu2_0 = small.mu2
    d = np.log(large.volume) / np.log(large.L)
    win_s = ess_window(small, mu2_0, ess_fraction)
    win_l = ess_window(large, mu2_0, ess_fraction)
    window = min(win_s, win_l)

    def crossing_and_fss(idx):
        mc = binder_crossing(small, large, mu2_0, window, idx)
        uc = moments(small, mc - mu2_0, idx[0])["U"] if np.isfinite(mc) else np.nan
        ms, ml = moments(small, mu2_star - mu2_0, idx[0]), moments(large, mu2_star - mu2_0, idx[1])
        return [mc, uc, d + np.log(ml["m2"] / ms["m2"]) / np.log(b), -np.log(ml["abs_m"] / ms["abs_m"]) / np.log(b)]

    (mc, uc, gnu, bnu), (dmc, duc, dgnu, dbnu), _ = jackknife(crossing_and_fss, [small.n, large.n], n_bins)
    out = {"L_small": small.L, "L_large": large.L, "window": window, "mu2_c": (float(mc), float(dmc)),
           "U_c": (float(uc), float(duc)), "gamma_nu": (float(gnu), float(dgnu)), "beta_nu": (float(bnu), float(dbnu))}
    if not np.isfinite(mc):
        out["lambda"] = out["nu"] = (np.nan, np.nan)
        return out
    grid = np.linspace(mc - 0.8 * win_s, mc + 0.8 * win_s, 9)
    window_l = (mu2_0 - win_l, mu2_0 + win_l)

    def nu_of(idx):
        lam = flow_slope(small, large, grid, window_l, idx)
        return [lam, np.log(b) / np.log(1.0 / lam) if 0 < lam < 1 else np.nan]

    (lam, nu), (dlam, dnu), _ = jackknife(nu_of, [small.n, large.n], n_bins)
    out["lambda"], out["nu"] = (float(lam), float(dlam)), (float(nu), float(dnu))
    return out
