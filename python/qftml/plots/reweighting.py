"""PNG plots of a reweighting scan (qftml.reweighting.driver; matplotlib, Agg backend).

Exports:
    plot_scan(points, direct, stem, key, observables, errors="gamma", ess_min=100.0, phase_sigma=3.0,
              title=None) -> list of written paths:
        STEM_<obs>.png        each scalar observable vs the scanned coupling (Re and Im for complex
                              targets): error band over reliable points, flagged points hollow red,
                              direct simulations as black squares
        STEM_diagnostics.png  ESS (and |average phase| for complex targets) with the flag thresholds
        STEM_corr.png         the time-slice correlator at the first, middle and last points
Points are qftml.reweighting.estimator.ReweightPoint; `direct` points carry params {"value": x}.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qftml.plots import save_figure  # noqa: E402


def _error(est, which):
    return est.error if which == "gamma" else est.error_jackknife


def _part(points, name, fn, attr):
    return np.array([fn(complex(np.asarray(getattr(p.estimates[name], attr)))) for p in points])


def _observable_panel(ax, x, points, direct, name, fn, which, bad):
    v = _part(points, name, fn, "value")
    e = np.array([fn(complex(np.asarray(_error(p.estimates[name], which)))) for p in points])
    ok = ~bad
    # band over reliable stretches only; flagged points stand alone (their errors mislead)
    ax.fill_between(x, v - e, v + e, where=ok, color="C0", alpha=0.3, lw=0, label=f"reweighted ({which} error)")
    ax.plot(np.where(ok, x, np.nan), np.where(ok, v, np.nan), "-", color="C0", lw=1)
    if ok.any() and bad.any():
        lo, hi = np.min((v - e)[ok]), np.max((v + e)[ok])
        for p in direct:
            dv = fn(complex(np.asarray(p.estimates[name].value)))
            lo, hi = min(lo, dv), max(hi, dv)
        pad = 0.5 * (hi - lo) + 1e-12
        ax.set_ylim(lo - pad, hi + pad)   # flagged points may leave the frame
    ax.plot(x[ok], v[ok], "o", color="C0", ms=4)
    if bad.any():
        ax.errorbar(x[bad], v[bad], e[bad], fmt="o", mfc="white", mec="red", ecolor="red", ms=6,
                    label="flagged: unreliable")
    for p in direct:
        dv, de = complex(np.asarray(p.estimates[name].value)), complex(np.asarray(p.estimates[name].error))
        ax.errorbar([p.params["value"]], [fn(dv)], [fn(de)], fmt="s", color="k", ms=5, capsize=3,
                    label="direct simulation" if p is direct[0] else None)


def _plot_observable(x, points, direct, name, key, which, bad, cplx, stem, title):
    parts = [("Re", np.real), ("Im", np.imag)] if cplx else [("", np.real)]
    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.8), squeeze=False)
    for ax, (lab, fn) in zip(axes[0], parts):
        _observable_panel(ax, x, points, direct, name, fn, which, bad)
        ax.set_xlabel(key)
        ax.set_ylabel(f"{lab} <{name}>" if lab else f"<{name}>")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or f"<{name}> reweighted along {key}", fontsize=10)
    return save_figure(fig, f"{stem}_{name}.png")


def _plot_diagnostics(x, points, key, bad, cplx, ess_min, phase_sigma, stem):
    fig, axes = plt.subplots(1, 2 if cplx else 1, figsize=(10.4 if cplx else 5.2, 3.8), squeeze=False)
    ess = np.array([p.ess for p in points])
    ax = axes[0][0]
    ax.semilogy(x, ess, "o-", ms=4)
    ax.axhline(ess_min, color="red", ls="--", label=f"ess_min = {ess_min:g}")
    if bad.any():
        ax.plot(x[bad], ess[bad], "o", mfc="white", mec="red", ms=7, label="flagged")
    ax.set_ylabel("effective sample size")
    panels = [ax]
    if cplx:
        ax = axes[0][1]
        ph = np.array([p.abs_phase for p in points])
        ph_err = np.array([p.abs_phase_error for p in points])
        ax.errorbar(x, ph, ph_err, fmt="o-", ms=4, capsize=2)
        ax.plot(x, phase_sigma * ph_err, "r--", label=f"{phase_sigma:g} sigma")
        if bad.any():
            ax.plot(x[bad], ph[bad], "o", mfc="white", mec="red", ms=7, label="flagged")
        ax.set_yscale("log")
        ax.set_ylabel("|<average phase>|")
        panels.append(ax)
    for ax in panels:
        ax.set_xlabel(key)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save_figure(fig, f"{stem}_diagnostics.png")


def _plot_correlators(points, which, stem):
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for i in sorted({0, len(points) // 2, len(points) - 1}):
        p = points[i]
        c, e = np.real(p.estimates["corr"].value), np.real(_error(p.estimates["corr"], which))
        lab = ", ".join(f"{k}={v:.4g}" for k, v in p.params.items()) or "target"
        lab += " (flagged)" if p.flags else ""
        ax.errorbar(np.arange(len(c)), c, e, fmt="o-" if p.reliable else "o--", ms=3, capsize=2, label=lab,
                    mfc=None if p.reliable else "white")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("Re C(t)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, f"{stem}_corr.png")


def plot_scan(points, direct, stem, key, observables, errors="gamma", ess_min=100.0, phase_sigma=3.0, title=None):
    """The PNG plots of a scan (see the module docstring); returns the files written."""
    files = []
    cplx = any(p.complex_valued for p in points)
    bad = np.array([not p.reliable for p in points])
    if key and len(points) > 1:
        x = np.array([p.params[key] for p in points])
        for name in observables:
            if name in points[0].estimates and not np.ndim(points[0].estimates[name].value):
                files.append(_plot_observable(x, points, direct, name, key, errors, bad, cplx, stem, title))
        files.append(_plot_diagnostics(x, points, key, bad, cplx, ess_min, phase_sigma, stem))
    if "corr" in points[0].estimates:
        files.append(_plot_correlators(points, errors, stem))
    return files
