"""Reweighting estimator (DESIGN 1.4): expectation values of a target action A from an ensemble of S.

    <O>_A = <O e^{-(A-S)}>_S / <e^{-(A-S)}>_S

with delta_i = (A - S)(phi_i) per configuration, real or complex. Weights are formed after a
log-sum-exp shift, w_i = exp(-delta_i - max_j Re(-delta_j)), so nothing overflows even when
|A - S| ~ V. Complex A gives complex weights and complex averages.

Errors, both over the correlated numerator and denominator:
  * Gamma method (pyerrors via qftml.stats.errors, autocorrelation aware): the ratio
    R = sum O w / sum w is linearised,
        delta R_i = (O_i - R) w_i / mean(w)                      (mean over configurations)
    and the real and imaginary parts of this projected series are analysed by pyerrors'
    gamma_method (the same first-order propagation pyerrors' derived_observable performs).
    Derived quantities f(R_1, ..., R_k) use delta f_i = sum_j (df/dR_j) delta R_ij.
  * blocked jackknife: the full, non-linear estimator on delete-one-bin samples (bins never
    cross replica boundaries).

Per point diagnostics:
  ess         Kish effective sample size (sum |w|)^2 / sum |w|^2  (1 <= ess <= N)
  phase       average phase <e^{-i Im(A-S)}>_{|w|} = <w>_S / <|w|>_S = Z_A / Z_{Re A}, with error
  log_z_ratio ln(Z_A / Z_S) = ln <e^{-(A-S)}>_S, with error
  flags       "low_ess" (ess < ess_min), "phase" (|phase| < phase_sigma * its error, complex A only),
              "nonfinite" (weights overflowed or were NaN); an empty list means reliable.

Exports:
    Estimate                 value (complex array), error / error_jackknife (complex: re + i im
                             errors), tau_int (real, max over parts) and helpers
    ReweightPoint            estimates {name: Estimate}, ess, phase, log_z_ratio, flags, to_dict()
    DERIVED                  derived observables: chi, binder, xi2 (second-moment length along 0)
    primary_observables(obs, volume, shape)  per-configuration primaries from stored observables
    reweight(delta, primaries, ...)          one target point
    reweight_scan(deltas, primaries, ..., progress=False, quiet=False)   several points (rows of deltas)
    normalized_weights(delta) -> (w, ess)    real A - S: w_i = e^{-delta_i} / sum_j e^{-delta_j}
                                             (log-sum-exp shift) and the Kish ESS 1 / sum w_i^2
    ReweightError            bad input (empty ensembles, shape mismatches, non-finite A - S)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qftml.engine.observables import timeslice_correlator
from qftml.stats.errors import column_errors, jackknife_bins, jackknife_error, replica_bounds


class ReweightError(ValueError):
    """Bad input to reweighting; the message is meant for the user."""


@dataclass
class Estimate:
    """A reweighted expectation value: complex value with separate errors of real and imaginary parts."""
    value: np.ndarray
    error: np.ndarray            # Gamma method: err(Re) + 1j * err(Im)
    error_jackknife: np.ndarray  # blocked jackknife: err(Re) + 1j * err(Im)
    tau_int: np.ndarray          # integrated autocorrelation time (max over Re/Im parts), in configs

    def to_dict(self, complex_valued: bool) -> dict:
        def part(x, fn):
            x = fn(np.asarray(x))
            return x.tolist() if x.ndim else float(x)
        d = {"value": part(self.value, np.real), "error": part(self.error, np.real),
             "error_jackknife": part(self.error_jackknife, np.real), "tau_int": part(self.tau_int, np.real)}
        if complex_valued:
            d.update({"value_imag": part(self.value, np.imag), "error_imag": part(self.error, np.imag),
                      "error_jackknife_imag": part(self.error_jackknife, np.imag)})
        return d


@dataclass
class ReweightPoint:
    estimates: dict
    n_cfg: int
    ess: float
    phase: complex
    phase_error: complex       # err(Re) + 1j err(Im)
    abs_phase: float
    abs_phase_error: float
    log_z_ratio: complex
    log_z_ratio_error: complex
    complex_valued: bool
    flags: list = field(default_factory=list)
    params: dict = field(default_factory=dict)

    @property
    def reliable(self) -> bool:
        return not self.flags

    def to_dict(self) -> dict:
        c = self.complex_valued
        return {"params": self.params, "n_cfg": self.n_cfg, "ess": self.ess, "ess_fraction": self.ess / self.n_cfg,
                "phase": [self.phase.real, self.phase.imag],
                "phase_error": [self.phase_error.real, self.phase_error.imag],
                "abs_phase": self.abs_phase, "abs_phase_error": self.abs_phase_error,
                "log_z_ratio": [self.log_z_ratio.real, self.log_z_ratio.imag],
                "log_z_ratio_error": [self.log_z_ratio_error.real, self.log_z_ratio_error.imag],
                "flags": list(self.flags), "reliable": self.reliable,
                "observables": {k: e.to_dict(c) for k, e in self.estimates.items()}}


# ---------------------------------------------------------------------------------------------
# primary and derived observables
# ---------------------------------------------------------------------------------------------

def primary_observables(obs: dict, volume: int, shape) -> dict:
    """Per-configuration primaries (arrays (n,) or (n, k)) from stored observables (DESIGN 1.2).

    Uses M, m, abs_m, m2, m4, sum_phi2, sum_phi4, link_sums (n, n_links) and slice_sums (n, L0)
    when present; adds phi2 = sum phi^2 / V, phi4 = sum phi^4 / V, the time-slice correlator
    corr[t] = (1/V) sum_t0 s(t0) s(t0+t), and G_k1 = |sum_t s(t) e^{2 pi i t / L0}|^2 / V (the
    momentum-space two-point function at the smallest momentum along direction 0, for xi2).
    """
    out = {}
    for name in ("M", "m", "abs_m", "m2", "m4", "sum_phi2", "sum_phi4"):
        if name in obs:
            out[name] = np.asarray(obs[name], dtype=float)
    if "sum_phi2" in obs:
        out["phi2"] = np.asarray(obs["sum_phi2"], dtype=float) / volume
    if "sum_phi4" in obs:
        out["phi4"] = np.asarray(obs["sum_phi4"], dtype=float) / volume
    if "link_sums" in obs:
        out["link_sums"] = np.asarray(obs["link_sums"], dtype=float)
    if "slice_sums" in obs:
        s = np.asarray(obs["slice_sums"], dtype=float)
        if s.ndim != 2 or s.shape[1] != shape[0]:
            raise ReweightError(f"slice_sums has shape {s.shape}, expected (n_cfg, {shape[0]})")
        out["corr"] = timeslice_correlator(s, volume)
        out["G_k1"] = np.abs(np.fft.fft(s, axis=1)[:, 1]) ** 2 / volume
    return out


def _chi(volume, shape):
    f = lambda m2, am: volume * (m2 - am * am)  # noqa: E731
    g = lambda m2, am: (volume, -2 * volume * am)  # noqa: E731
    return ("m2", "abs_m"), f, g


def _binder(volume, shape):
    f = lambda m4, m2: 1 - m4 / (3 * m2 * m2)  # noqa: E731
    g = lambda m4, m2: (-1 / (3 * m2 * m2), 2 * m4 / (3 * m2 ** 3))  # noqa: E731
    return ("m4", "m2"), f, g


def _xi2(volume, shape):
    # xi = sqrt(G(0)/G(k1) - 1) / (2 sin(pi/L0)),  G(0) = <M^2>/V = V <m^2>
    c = 1.0 / (2 * math.sin(math.pi / shape[0]))

    def f(m2, gk1):
        return c * np.sqrt(volume * m2 / gk1 - 1 + 0j)

    def g(m2, gk1):
        root = np.sqrt(volume * m2 / gk1 - 1 + 0j)
        d = c / (2 * root)
        return (d * volume / gk1, -d * volume * m2 / gk1 ** 2)
    return ("m2", "G_k1"), f, g


# name -> factory(volume, shape) -> (input names, f, gradient); f, gradient holomorphic in the inputs
DERIVED = {"chi": _chi, "binder": _binder, "xi2": _xi2}


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------

def _as_2d(x, n):
    x = np.asarray(x)
    if x.shape[0] != n:
        raise ReweightError(f"an observable has {x.shape[0]} configurations, A - S has {n}")
    return x.reshape(n, -1), x.shape[1:]


def _weights(delta):
    """Log-sum-exp shifted weights w = exp(-delta - shift) with shift = max Re(-delta)."""
    complex_valued = bool(np.iscomplexobj(delta))  # a complex scan reports Re and Im at every point
    logw = -delta
    if not np.all(np.isfinite(logw)):
        raise ReweightError("A - S is not finite for some configurations (overflow or NaN in the couplings)")
    shift = float(np.max(np.real(logw)))
    w = np.exp(logw - shift) if complex_valued else np.exp(np.real(logw) - shift)
    return w, shift, complex_valued


def _stack(primaries, n):
    """(X (n, k) of all primaries side by side, column starts, trailing shapes {name: shape}, names)."""
    blocks, shapes, names = [], {}, []
    for name, x in primaries.items():
        x2, sh = _as_2d(np.asarray(x, dtype=float), n)
        blocks.append(x2)
        shapes[name] = sh
        names.append(name)
    X = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
    return X, np.cumsum([0] + [b.shape[1] for b in blocks]), shapes, names


class _Errors:
    """Gamma-method and jackknife errors of projected series, for one set of replicas."""

    def __init__(self, enabled, complex_valued, lengths, name, S):
        self.enabled, self.complex_valued, self.args = enabled, complex_valued, (lengths, name, S)

    def gamma(self, series):
        return column_errors(series, *self.args)

    def estimate(self, val, ser, jks, sh) -> Estimate:
        """Estimate of value `val` with the linearised series `ser` (n, k) and jackknife samples `jks`."""
        if not self.enabled:
            nan = np.full(np.shape(val), np.nan)
            return Estimate(np.asarray(val).reshape(sh), (nan + 1j * nan).reshape(sh),
                            (nan + 1j * nan).reshape(sh), nan.reshape(sh))
        ere, tre = self.gamma(np.real(ser))
        if self.complex_valued:
            eim, tim = self.gamma(np.imag(ser))
        else:
            eim, tim = np.zeros_like(ere), np.zeros_like(tre)
        err = ere + 1j * eim
        ejk = jackknife_error(jks)
        if not self.complex_valued:
            ejk = ejk.real + 0j
        return Estimate(np.asarray(val).reshape(sh), err.reshape(sh), ejk.reshape(sh),
                        np.maximum(tre, tim).reshape(sh))

    def complex_error(self, series):
        """err(Re) + 1j err(Im) of a complex projected series (n,)."""
        return complex(self.gamma(np.real(series)[:, None])[0][0], self.gamma(np.imag(series)[:, None])[0][0])


def _phase_and_log_z(w, shift, errs):
    """(phase, its error, |phase| error, ln Z_A/Z_S, its error): P = <w>/<|w|>, ln Z_A/Z_S = shift + ln <w>."""
    absw = np.abs(w)
    wbar, absbar = w.mean(), absw.mean()
    phase = complex(wbar / absbar)
    logz = complex(shift + np.log(wbar + 0j))
    if not errs.enabled:
        nan = complex(np.nan, np.nan)
        return phase, nan, float("nan"), logz, nan
    pser = (w - phase * absw) / absbar
    perr = errs.complex_error(pser)
    lerr = errs.complex_error((w - wbar) / wbar)
    absp = abs(phase)
    aser = (np.real(np.conj(phase) * pser) / absp) if absp > 0 else np.real(pser)
    aperr = float(errs.gamma(aser[:, None])[0][0])
    return phase, perr, aperr, logz, lerr


def reweight(delta, primaries: dict, *, replica_lengths=None, ensemble_name="ensemble", derived=(),
             volume=None, shape=None, n_bins=50, ess_min=100.0, phase_sigma=3.0, gamma_S=2.0,
             params=None, errors=True) -> ReweightPoint:
    """Reweight `primaries` ({name: (n,) or (n, k) real arrays}) with delta = A - S per configuration.

    `replica_lengths` splits the n configurations into independent Markov chains (in order);
    `derived` names entries of DERIVED (need `volume` and `shape`); flags use `ess_min` and
    `phase_sigma` (see the module docstring). `errors=False` skips error analysis (benchmarks).
    """
    delta = np.asarray(delta)
    if delta.ndim != 1:
        raise ReweightError(f"A - S must be one number per configuration, got shape {delta.shape}")
    n = delta.shape[0]
    if n == 0:
        raise ReweightError("the ensemble is empty: no configurations to reweight")
    lengths = [n] if replica_lengths is None else [int(x) for x in replica_lengths]
    try:
        replica_bounds(n, lengths)
    except ValueError as e:
        raise ReweightError(str(e)) from None
    w, shift, complex_valued = _weights(delta)
    absw = np.abs(w)
    ess = float(absw.sum() ** 2 / (absw ** 2).sum())
    flags = [] if np.isfinite(ess) else ["nonfinite"]

    # primary ratios R_j = sum X_j w / sum w  (zero-variance-safe: w > 0 somewhere since max shift is 0)
    X, cols, shapes, names = _stack(primaries, n)
    R = (X * w[:, None]).sum(0) / w.sum()
    errs = _Errors(errors and n >= 2, complex_valued, lengths, ensemble_name, gamma_S)
    proj = Rjk = None
    if errs.enabled:
        proj = (X - R) * (w / w.mean())[:, None]
        bins = jackknife_bins(lengths, n_bins)
        wjk = w.sum() - np.array([w[a:b].sum() for a, b in bins])
        Xwb = np.array([(X[a:b] * w[a:b, None]).sum(0) for a, b in bins])
        Rjk = (Xwb.sum(0) - Xwb) / wjk[:, None]

    estimates = {}
    for j, name in enumerate(names):
        sl = slice(cols[j], cols[j + 1])
        val = R[sl] if complex_valued else R[sl].real
        estimates[name] = errs.estimate(val, proj[:, sl] if errs.enabled else None,
                                        Rjk[:, sl] if errs.enabled else None, shapes[name])
    for dname in derived:
        inputs, f, g = DERIVED[dname](volume, shape)
        if not all(i in shapes and shapes[i] == () for i in inputs):
            continue
        idx = [cols[names.index(i)] for i in inputs]
        args = [R[i] for i in idx]
        val = f(*args) if complex_valued else np.real(f(*args))
        ser = jks = None
        if errs.enabled:
            ser = sum(gk * proj[:, i] for gk, i in zip(g(*args), idx))[:, None]
            jks = np.asarray(f(*[Rjk[:, i] for i in idx]))[:, None]
        estimates[dname] = errs.estimate(np.asarray(val), ser, jks, ())

    phase, perr, aperr, logz, lerr = _phase_and_log_z(w, shift, errs)
    if ess < ess_min:
        flags.append("low_ess")
    if complex_valued and not (abs(phase) > phase_sigma * aperr):
        flags.append("phase")
    return ReweightPoint(estimates=estimates, n_cfg=n, ess=ess, phase=phase, phase_error=perr,
                         abs_phase=abs(phase), abs_phase_error=aperr, log_z_ratio=logz, log_z_ratio_error=lerr,
                         complex_valued=complex_valued, flags=flags, params=dict(params or {}))


def reweight_scan(deltas, primaries: dict, *, params=None, progress=False, quiet=False, **kwargs) -> list:
    """reweight() for each row of deltas (n_points, n); params[i] is attached to point i.
    `progress`: report through qftml.progress.Progress (a bar, or log lines if `quiet`)."""
    from qftml.progress import Progress

    deltas = np.asarray(deltas)
    if deltas.ndim == 1:
        deltas = deltas[None, :]
    bar = Progress(deltas.shape[0], "reweight", unit="pt", quiet=quiet) if progress else None
    points = []
    for i in range(deltas.shape[0]):
        points.append(reweight(deltas[i], primaries, params=(params[i] if params is not None else None), **kwargs))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return points


def normalized_weights(delta):
    """Normalised reweighting weights of a real A - S (one number per configuration) and their Kish
    effective sample size: w_i = exp(-delta_i - max_j(-delta_j)), w /= sum w, ess = 1 / sum w^2.

    The estimator of reweight() for code that needs the weights themselves (e.g. many reweighted
    averages of one ensemble along a coupling, qftml.stats.finite_size)."""
    w, _, _ = _weights(np.asarray(delta, dtype=float))
    w = w / w.sum()
    return w, float(1.0 / np.sum(w * w))
