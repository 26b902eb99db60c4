"""The one home of error analysis: Gamma-method errors (pyerrors), jackknife, value(error) text.

Every Monte Carlo error in qftml comes from here. Series are Markov chains in Markov-time order;
several independent chains of one ensemble (replicas) are passed with `replica_lengths`, and
pyerrors pools them as replicas "name|r0", "name|r1", ... of one ensemble (Wolff's Gamma method with
the automatic window, parameter S). Derived quantities are pyerrors derived observables (linear
error propagation by automatic differentiation): build them from `gamma`'s Obs with ordinary
arithmetic, or use pe.derived_observable / pe.roots.find_root.

The jackknife is for estimators that are not smooth functions of a few means (Binder crossings,
fits inside the estimator): delete-one-bin samples, bins never straddling a replica boundary.

Exports:
    ENSEMBLE                                 the default ensemble name
    obs(series, name, replica_lengths=None) -> pe.Obs        primary observable, no analysis yet
    gamma(series, name, replica_lengths=None, S=2.0) -> pe.Obs   with the Gamma method applied
    mean_error(series, name, replica_lengths=None, S=2.0) -> (mean, error)   0 error if constant
    summarize(o) -> {mean, error, tau_int, tau_int_error}   of an Obs (Gamma method applied if needed)
    tau_int(series, S=2.0) -> (tau_int, its error)           0.5, 0 for a constant series
    column_errors(x, replica_lengths, name, S=2.0) -> (errors, tau_int)   every column of (n, k)
    replica_bounds(n, replica_lengths) -> [(start, stop)]    the replicas of n configurations
    jackknife_bins(replica_lengths, n_bins) -> [(start, stop)]   ~n_bins bins within replicas
    jackknife_error(samples) -> error         of delete-one samples (nb, ...); complex: err Re + i err Im
    jackknife(func, lengths, n_bins=20) -> (value, error, samples)   independent ensembles of the
                                             given lengths; func(list of index arrays or None)
    format_value(mean, error) -> str          "1.2345(67)": two significant digits of the error
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pyerrors as pe

ENSEMBLE = "ensemble"


def _names(name, n_replicas):
    return [f"{name}|r{i}" for i in range(n_replicas)] if n_replicas > 1 else [name]


def replica_bounds(n: int, replica_lengths=None) -> list:
    """[(start, stop)] of each replica; one replica of all n configurations by default."""
    lengths = [int(n)] if replica_lengths is None else [int(x) for x in replica_lengths]
    if sum(lengths) != n or any(x <= 0 for x in lengths):
        raise ValueError(f"replica lengths {lengths} do not add up to {n} configurations (or one is empty)")
    edges = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(len(lengths))]


def obs(series, name: str = ENSEMBLE, replica_lengths=None) -> pe.Obs:
    """A pyerrors Obs of one series (or its replicas, split by replica_lengths)."""
    x = np.asarray(series, dtype=float)
    bounds = replica_bounds(len(x), replica_lengths)
    return pe.Obs([x[a:b] for a, b in bounds], _names(name, len(bounds)))


def gamma(series, name: str = ENSEMBLE, replica_lengths=None, S: float = 2.0) -> pe.Obs:
    """obs(...) with the Gamma method applied (pyerrors' warnings about short chains silenced)."""
    o = obs(series, name, replica_lengths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o.gamma_method(S=S)
    return o


def mean_error(series, name: str = ENSEMBLE, replica_lengths=None, S: float = 2.0):
    """(mean, Gamma-method error); a series without fluctuations has error 0."""
    x = np.asarray(series, dtype=float)
    if len(x) == 0:
        raise ValueError("mean_error of an empty series")
    if np.ptp(x) == 0:
        return float(x.mean()), 0.0
    o = gamma(x, name, replica_lengths, S)
    return float(o.value), float(o.dvalue)


def summarize(o: pe.Obs) -> dict:
    """mean, error, tau_int and its error of an Obs (first ensemble; Gamma method applied if needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        o.gamma_method()
    names = list(getattr(o, "e_tauint", {}) or {})
    tau = float(o.e_tauint[names[0]]) if names else math.nan
    dtau = float(o.e_dtauint[names[0]]) if names else math.nan
    return {"mean": float(o.value), "error": float(o.dvalue), "tau_int": tau, "tau_int_error": dtau}


def tau_int(series, S: float = 2.0):
    """Integrated autocorrelation time in units of the series spacing (0.5 for no fluctuation)."""
    x = np.asarray(series, dtype=float)
    if np.ptp(x) == 0:
        return 0.5, 0.0
    o = gamma(x, "chain", S=S)
    return float(o.e_tauint["chain"]), float(o.e_dtauint["chain"])


def column_errors(x, replica_lengths=None, name: str = ENSEMBLE, S: float = 2.0):
    """Gamma-method error and tau_int (max over replicas) of every column of a real (n, k) series."""
    x = np.asarray(x, dtype=float)
    n, k = x.shape
    err, tau = np.zeros(k), np.full(k, 0.5)
    if n < 2:
        return np.full(k, np.nan), tau
    for j in range(k):
        col = x[:, j]
        if not np.any(col - col[0]):
            continue  # no fluctuation at all (e.g. a constant observable)
        o = gamma(col, name, replica_lengths, S)
        err[j] = o.dvalue
        tau[j] = float(max(o.e_tauint.values())) if o.e_tauint else 0.5
    return err, tau


def jackknife_bins(replica_lengths, n_bins: int) -> list:
    """About n_bins bins (start, stop) in all, in proportion to the replicas, none crossing an edge."""
    bounds = replica_bounds(int(sum(replica_lengths)), replica_lengths)
    n = bounds[-1][1]
    out = []
    for a, b in bounds:
        nb = min(max(1, int(round(n_bins * (b - a) / n))), b - a)
        for chunk in np.array_split(np.arange(a, b), nb):
            out.append((int(chunk[0]), int(chunk[-1]) + 1))
    return out


def _jackknife_variance(s):
    nb = s.shape[0]
    d = s - s.mean(axis=0)
    return (nb - 1) / nb * (d ** 2).sum(0)


def jackknife_error(samples) -> np.ndarray:
    """Error from delete-one samples (nb, ...): sqrt((nb-1)/nb sum (s - mean)^2); for complex
    samples err(Re) + 1j err(Im)."""
    s = np.asarray(samples)
    nb = s.shape[0]
    if nb < 2:
        return np.full(s.shape[1:], np.nan) * (1 + 1j if np.iscomplexobj(s) else 1)
    if np.iscomplexobj(s):
        # deviations from the complex mean, then split: the reweighting record (df196fb) to the last bit
        d = s - s.mean(axis=0)
        f = (nb - 1) / nb
        return np.sqrt(f * (d.real ** 2).sum(0)) + 1j * np.sqrt(f * (d.imag ** 2).sum(0))
    return np.sqrt(_jackknife_variance(s))


def jackknife(func, lengths, n_bins: int = 20):
    """Blocked jackknife over independent ensembles of the given lengths (variances add).

    func(idx) with idx a list, one entry per ensemble: None (all of it) or the index array of the
    kept records. Returns (value, error, samples) with samples[e] the (n_bins, ...) delete-one-bin
    values of ensemble e."""
    lengths = [int(n) for n in lengths]
    full = [None] * len(lengths)
    value = np.asarray(func(full), dtype=float)
    var = np.zeros_like(value)
    samples = []
    for e, n in enumerate(lengths):
        edges = np.linspace(0, n, n_bins + 1).astype(int)
        vals = []
        for k in range(n_bins):
            idx = list(full)
            idx[e] = np.concatenate([np.arange(0, edges[k]), np.arange(edges[k + 1], n)])
            vals.append(np.asarray(func(idx), dtype=float))
        vals = np.array(vals)
        var = var + _jackknife_variance(vals)
        samples.append(vals)
    return value, np.sqrt(var), samples


def format_value(mean: float, error: float) -> str:
    """mean(error) with two significant digits of the error; plain mean if the error is 0 or not finite."""
    if not (np.isfinite(mean) and np.isfinite(error)):
        return f"{mean:.6g}"
    if error <= 0:
        return f"{mean:.8g}"
    digits = max(0, 1 - int(math.floor(math.log10(error))))
    if digits > 12:
        return f"{mean:.6g}({error:.2g})"
    return f"{mean:.{digits}f}({round(error * 10 ** digits):d})"
