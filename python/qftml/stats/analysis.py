"""Error analysis of ensembles (DESIGN 1.2): Gamma-method errors, derived quantities, correlators.

Every error is autocorrelation-aware: each per-record series becomes a pyerrors Obs on one
Monte Carlo ensemble and `gamma_method()` gives the error and the integrated autocorrelation time
tau_int (in units of the analysed series: stored records, or bins of `bin` records). Derived
quantities are pyerrors derived observables, so their errors propagate the correlations between
the primary series (linear error propagation, automatic differentiation).

Quantities (V = volume, d = dimensions, L0 = extent of direction 0, s(t) = time-slice sums):
    every scalar series in /observables (M, m, abs_m, m2, m4, sum_phi2, sum_phi4, action,
    sum_links_nn, link_sum_<l>; `sweep` is the record's sweep index, not an observable)
    phi2 = <sum_phi2> / V                                  mean of phi^2 per site
    chi = V (<m^2> - <|m|>^2)                              susceptibility
    binder = 1 - <m^4> / (3 <m^2>^2)                       Binder cumulant
    energy_per_link = -<sum_<xy> phi_x phi_y> / (d V)       nearest-neighbour links; for `ising`
                                                           this is the energy per link -<s s>
    C(t) = (1/V) sum_t0 <s(t0) s(t0 + t)>                  zero-momentum time-slice correlator
    C_conn(t) = C(t) - <M>^2 / (L0 V)                      its connected part (differs from C(t)
                                                           when the chain stays in one sign sector)
    G~(p) = (1/V) <|sum_x e^{i p x_0} phi_x|^2>            from s(t): G~(0) = <M^2>/V
    xi2 = sqrt(G~(0)/G~(p_min) - 1) / (2 sin(p_min/2)),   p_min = 2 pi / L0   second-moment
                                                           correlation length along direction 0
    xi2_dir<mu>: the same along every direction mu from the stored configurations (if present
    and not larger than `max_config_values` numbers), via each direction's Fourier mode.

Ensembles are qftml.io.ensembles.Ensemble (open_ensemble(path) or Ensemble.from_records); errors
and value(error) text come from qftml.stats.errors.

Exports:
    scalar_names(ens) -> list          the scalar observables of an ensemble, in table order
    cut_and_bin(series, therm=0, bin=1)   drop `therm` records, average blocks of `bin`
    correlators(ens, therm=0, bin=1) -> (C(t), C_conn(t)) lists of Obs
    second_moment_xi(g0, g1, L) -> Obs   xi2 from Obs G~(0), G~(p_min) (p_min = 2 pi / L)
    mode_powers(configs, axis) -> (G~(0), G~(p_min e_axis)) per configuration
    two_point_samples(configs) -> per-configuration G(x) = (1/V) sum_y phi_y phi_{y+x} (FFT)
    analyze(ens, therm=0, bin=1, use_configs=True, max_config_values=2e8) -> dict (JSON-ready)
    format_report(result) -> str      the table printed by `qftml analyze`
"""
from __future__ import annotations

import warnings

import numpy as np
import pyerrors as pe

from qftml.engine.observables import timeslice_correlator
from qftml.stats.errors import format_value, gamma, summarize

# per-record series that are bookkeeping, not observables
_NOT_OBSERVABLES = ("sweep",)
_SCALAR_ORDER = ("M", "m", "abs_m", "m2", "m4", "sum_phi2", "sum_phi4", "action", "sum_links_nn")


def scalar_names(ens) -> list:
    """Names of the per-record scalar observables (not `sweep`), in the order of the tables."""
    names = [n for n, v in ens.observables.items() if np.ndim(v) == 1 and n not in _NOT_OBSERVABLES]
    order = {n: i for i, n in enumerate(_SCALAR_ORDER)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def cut_and_bin(series, therm=0, bin=1):
    """Drop the first `therm` records, then average consecutive blocks of `bin` (a partial last
    block is dropped). Works along axis 0 of arrays of any trailing shape."""
    if therm < 0 or bin < 1:
        raise ValueError(f"need therm >= 0 and bin >= 1, got therm={therm}, bin={bin}")
    x = np.asarray(series, dtype=float)[therm:]
    n = (len(x) // bin) * bin
    x = x[:n]
    if bin > 1:
        x = x.reshape((n // bin, bin) + x.shape[1:]).mean(axis=1)
    return x


def correlators(ens, therm=0, bin=1):
    """(C(t), C_conn(t)) for t = 0..L0-1 as lists of Obs, from the stored slice sums.

    C(t) is a per-record product, so it is formed before binning; C_conn(t) = C(t) - <M>^2/(L0 V)
    with M = sum of the slice sums, errors propagated jointly."""
    raw = np.asarray(ens.observables["slice_sums"], dtype=float)
    L0, V = raw.shape[1], ens.volume
    c = cut_and_bin(timeslice_correlator(raw, V), therm, bin)
    corr = [gamma(c[:, t]) for t in range(L0)]
    M = gamma(cut_and_bin(raw.sum(axis=1), therm, bin))
    disc = M ** 2 / (L0 * V)
    conn = [o - disc for o in corr]
    return corr, conn


def second_moment_xi(g0: pe.Obs, g1: pe.Obs, L: int) -> pe.Obs:
    """xi2 = sqrt(G~(0)/G~(p_min) - 1) / (2 sin(p_min/2)), p_min = 2 pi / L (nan if G~(0) < G~(p_min))."""
    p = 2 * np.pi / L
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        xi = (g0 / g1 - 1).sqrt() / (2 * np.sin(p / 2))
        xi.gamma_method()
    return xi


def _mode_powers_from_slices(slices, L):
    """Per record |sum_t s(t)|^2 and |sum_t e^{2 pi i t/L} s(t)|^2 (not yet divided by V)."""
    phase = np.exp(2j * np.pi * np.arange(L) / L)
    s = np.asarray(slices, dtype=float)
    return s.sum(axis=-1) ** 2, np.abs(s @ phase) ** 2


def mode_powers(configs, axis, volume=None):
    """(G~(0), G~(p_min e_axis)) per configuration of a chunk (k, *shape), G~(p) = |phi~(p)|^2 / V."""
    c = np.asarray(configs, dtype=float)
    volume = volume or int(np.prod(c.shape[1:]))
    others = tuple(i + 1 for i in range(c.ndim - 1) if i != axis)
    slices = c.sum(axis=others)
    p0, p1 = _mode_powers_from_slices(slices, c.shape[1 + axis])
    return p0 / volume, p1 / volume


def two_point_samples(configs):
    """Per-configuration G(x) = (1/V) sum_y phi_y phi_{y+x} via FFT; configs (k, *shape) -> (k, *shape)."""
    c = np.asarray(configs, dtype=float)
    axes = tuple(range(1, c.ndim))
    f = np.fft.rfftn(c, axes=axes)
    V = int(np.prod(c.shape[1:]))
    return np.fft.irfftn(f * np.conj(f), s=c.shape[1:], axes=axes) / V


def _series_summary(obs_list):
    sums = [summarize(o) for o in obs_list]
    return {"t": list(range(len(sums))), **{k: [s[k] for s in sums] for k in sums[0]}}


def _record_spacing(ens):
    sw = ens.observables.get("sweep")
    if sw is None or len(sw) < 2:
        return None
    d = np.diff(np.asarray(sw))
    return int(d[0]) if np.all(d == d[0]) else None


def analyze(ens, therm: int = 0, bin: int = 1, use_configs: bool = True,
            max_config_values: float = 2e8) -> dict:
    """Every scalar observable, the derived quantities and C(t), with Gamma-method errors.

    Returns a JSON-ready dict: run info, observables {name: summary}, derived {name: summary},
    correlator and correlator_connected {t, mean, error, tau_int, tau_int_error} (lists over t),
    notes (list of str).
    """
    if not ens.observables:
        raise ValueError(f"{ens.label}: no observables stored")
    n_used = (max(ens.n_records - therm, 0)) // bin
    if n_used < 2:
        raise ValueError(f"only {n_used} records left after --therm {therm} and --bin {bin} "
                         f"(the ensemble has {ens.n_records})")
    V, d = ens.volume, ens.ndim
    series = {n: cut_and_bin(ens.observables[n], therm, bin) for n in scalar_names(ens)}
    obs = {n: gamma(x) for n, x in series.items()}
    notes = []
    result = {
        "path": ens.path, "shape": list(ens.shape), "volume": V, "n_records": ens.n_records,
        "therm": therm, "bin": bin, "n_used": n_used, "record_spacing_sweeps": _record_spacing(ens),
        "tau_int_unit": "records" if bin == 1 else f"bins of {bin} records",
        "observables": {n: summarize(o) for n, o in obs.items()},
        "derived": {}, "correlator": None, "correlator_connected": None, "notes": notes,
    }
    der = {}
    if "sum_phi2" in obs:
        der["phi2"] = obs["sum_phi2"] / V
    if "m2" in obs and "abs_m" in obs:
        der["chi"] = V * (obs["m2"] - obs["abs_m"] ** 2)
    if "m2" in obs and "m4" in obs:
        der["binder"] = 1 - obs["m4"] / (3 * obs["m2"] ** 2)
    if "sum_links_nn" in obs:
        der["energy_per_link"] = -obs["sum_links_nn"] / (d * V)
    elif all(f"link_sum_{mu}" in obs for mu in range(d)):
        der["energy_per_link"] = -sum(obs[f"link_sum_{mu}"] for mu in range(d)) / (d * V)

    if "slice_sums" in ens.observables:
        raw = np.asarray(ens.observables["slice_sums"], dtype=float)
        corr, conn = correlators(ens, therm, bin)
        result["correlator"] = _series_summary(corr)
        result["correlator_connected"] = _series_summary(conn)
        p0, p1 = _mode_powers_from_slices(raw, raw.shape[1])
        g0, g1 = gamma(cut_and_bin(p0 / V, therm, bin)), gamma(cut_and_bin(p1 / V, therm, bin))
        der["xi2"] = second_moment_xi(g0, g1, ens.shape[0])
    if use_configs and ens.has_configs:
        if ens.n_records * V > max_config_values:
            notes.append(f"xi2 per direction skipped: {ens.n_records} x {V} values exceed {max_config_values:.0e}")
        else:
            per_dir = [([], []) for _ in range(d)]
            for chunk in ens.iter_configs():
                for mu in range(d):
                    a, b = mode_powers(chunk, mu, V)
                    per_dir[mu][0].append(a)
                    per_dir[mu][1].append(b)
            for mu in range(d):
                g0 = gamma(cut_and_bin(np.concatenate(per_dir[mu][0]), therm, bin))
                g1 = gamma(cut_and_bin(np.concatenate(per_dir[mu][1]), therm, bin))
                der[f"xi2_dir{mu}"] = second_moment_xi(g0, g1, ens.shape[mu])
    result["derived"] = {n: summarize(o) for n, o in der.items()}
    if "xi2" in der and not np.isfinite(der["xi2"].value):
        notes.append("xi2 is undefined (G~(0) < G~(p_min)): correlation length below the lattice resolution")
    return result


def format_report(result: dict) -> str:
    """Human-readable tables: observables, derived quantities, C(t)."""
    shape = "x".join(str(s) for s in result["shape"])
    spacing = result.get("record_spacing_sweeps")
    lines = [f"ensemble  {result.get('path') or '(in memory)'}",
             f"lattice   {shape} (V = {result['volume']}), {result['n_records']} records"
             + (f", one every {spacing} sweeps" if spacing else ""),
             f"analysed  {result['n_used']} "
             + ("records" if result["bin"] == 1 else f"bins of {result['bin']} records")
             + f" after a thermalisation cut of {result['therm']} records",
             f"errors    Gamma method (pyerrors); tau_int in units of {result['tau_int_unit']}", ""]

    def table(title, rows):
        out = [f"{title:<18} {'value':>24} {'mean':>15} {'error':>11} {'tau_int':>16}"]
        for name, s in rows.items():
            tau = f"{s['tau_int']:.2f}({s['tau_int_error']:.2f})" if np.isfinite(s["tau_int"]) else "-"
            out.append(f"{name:<18} {format_value(s['mean'], s['error']):>24} {s['mean']:>15.8g} "
                       f"{s['error']:>11.3g} {tau:>16}")
        return out

    lines += table("observable", result["observables"]) + [""]
    lines += table("derived", result["derived"])
    corr, conn = result.get("correlator"), result.get("correlator_connected")
    if corr:
        # C(t) = C(L0 - t): print t = 0 .. L0/2
        lines += ["", f"{'t':>4} {'C(t)':>20} {'tau_int':>14} {'C_conn(t)':>20} {'tau_int':>14}"]
        for t in range(len(corr["t"]) // 2 + 1):
            row = f"{t:>4} {format_value(corr['mean'][t], corr['error'][t]):>20} " \
                  f"{corr['tau_int'][t]:>8.2f}({corr['tau_int_error'][t]:.2f})"
            if conn:
                row += f" {format_value(conn['mean'][t], conn['error'][t]):>20} " \
                       f"{conn['tau_int'][t]:>8.2f}({conn['tau_int_error'][t]:.2f})"
            lines.append(row)
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
