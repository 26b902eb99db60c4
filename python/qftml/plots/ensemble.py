"""PNG plots of an ensemble (a qftml.io.ensembles.Ensemble; matplotlib, Agg backend: no display needed).

Exports:
    plot_history(ens, path)              Monte Carlo history of m, |m|, phi^2 per site and the
                                         energy per link against the sweep (or record) index
    plot_histogram_m(ens, path, therm=0)  histogram of the magnetisation per site m
    plot_correlator(ens, path, therm=0, bin=1)   C(t) and C_conn(t) with Gamma-method errors, log y
    plot_configuration(ens, path, index=-1)      one stored configuration as an image
                                         (a 2D slice x_2 = x_3 = ... = 0 for d > 2)
    plot_all(ens, out_dir, therm=0, bin=1) -> list of written paths
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from matplotlib.ticker import ScalarFormatter  # noqa: E402

from qftml.plots import save_figure  # noqa: E402
from qftml.stats.analysis import correlators  # noqa: E402
from qftml.stats.errors import summarize  # noqa: E402


def _title(ens, what):
    shape = "x".join(str(s) for s in ens.shape)
    name = os.path.basename(ens.path) if ens.path else "ensemble"
    return f"{what} — {name}, {shape}"


def _x_axis(ens):
    sw = ens.observables.get("sweep")
    if sw is not None:
        return np.asarray(sw), "sweep"
    return np.arange(ens.n_records), "record"


def plot_history(ens, path):
    x, xlabel = _x_axis(ens)
    V, d = ens.volume, ens.ndim
    panels = []
    o = ens.observables
    if "m" in o:
        panels.append((o["m"], "m = M / V"))
    if "abs_m" in o:
        panels.append((o["abs_m"], "|m|"))
    if "sum_phi2" in o and np.ptp(o["sum_phi2"]) > 0:  # constant (= 1) for Ising fields
        panels.append((np.asarray(o["sum_phi2"]) / V, r"$\sum_x \phi_x^2 / V$"))
    if "sum_links_nn" in o:
        panels.append((-np.asarray(o["sum_links_nn"]) / (d * V), "energy per link"))
    elif "action" in o:
        panels.append((np.asarray(o["action"]) / V, "S / V"))
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(8, 1.9 * len(panels) + 0.8), squeeze=False)
    for ax, (y, label) in zip(axes[:, 0], panels):
        ax.plot(x, y, lw=0.6)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel)
    axes[0, 0].set_title(_title(ens, "Monte Carlo history"))
    return save_figure(fig, path)


def plot_histogram_m(ens, path, therm=0):
    m = np.asarray(ens.observables["m"])[therm:]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    bins = min(80, max(10, int(np.sqrt(len(m)))))
    ax.hist(m, bins=bins, density=True, color="C0", alpha=0.8)
    ax.set_xlabel("m = M / V")
    ax.set_ylabel("probability density")
    ax.set_title(_title(ens, f"histogram of m ({len(m)} records)"))
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_correlator(ens, path, therm=0, bin=1):
    corr, conn = correlators(ens, therm, bin)
    t = np.arange(len(corr))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    dropped = 0
    for obs, label, fmt in ((corr, "C(t)", "o"), (conn, r"$C_{conn}(t) = C(t) - \langle M\rangle^2/(L_0 V)$", "s")):
        s = [summarize(o) for o in obs]
        mean = np.array([x["mean"] for x in s])
        err = np.array([x["error"] for x in s])
        pos = mean > 0  # a log axis shows only positive estimates; the title says if any are dropped
        dropped += int((~pos).sum())
        ax.errorbar(t[pos], mean[pos], yerr=err[pos], fmt=fmt, ms=4, capsize=3, label=label, alpha=0.85)
    ax.set_yscale("log")
    lo, hi = ax.get_ylim()
    if hi / lo < 20:  # less than ~a decade: plain numbers read better than 1.2 x 10^1
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("t (lattice units, direction 0)")
    ax.set_ylabel(r"$\frac{1}{V}\sum_{t_0} \langle s(t_0)\, s(t_0+t)\rangle$")
    title = "time-slice correlator, Gamma-method errors"
    if dropped:
        title += f"\n({dropped} non-positive estimates not shown on the log axis)"
    ax.set_title(_title(ens, title), fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    return save_figure(fig, path)


def plot_configuration(ens, path, index=-1):
    n = ens.n_records
    i = index % n
    cfg = np.asarray(ens.configs[i])
    while cfg.ndim > 2:
        cfg = cfg[..., 0]
    ising = np.all(np.abs(cfg) == 1.0)
    fig, ax = plt.subplots(figsize=(6.0, 5.2))
    if ising:
        im = ax.imshow(cfg, cmap="gray", vmin=-1, vmax=1, interpolation="nearest", origin="lower")
    else:
        lim = float(np.max(np.abs(cfg))) or 1.0
        im = ax.imshow(cfg, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest", origin="lower")
    fig.colorbar(im, ax=ax, label="spin s" if ising else r"$\phi_x$", ticks=[-1, 1] if ising else None)
    ax.set_xlabel("x_1")
    ax.set_ylabel("x_0")
    sweep = ens.observables.get("sweep")
    label = f"sweep {int(sweep[i])}" if sweep is not None else f"record {i}"
    extra = " (slice x_2 = ... = 0)" if ens.ndim > 2 else ""
    ax.set_title(_title(ens, f"configuration, {label}{extra}"), fontsize=10)
    return save_figure(fig, path)


def plot_all(ens, out_dir, therm=0, bin=1):
    """Every plot the ensemble has data for; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = [plot_history(ens, os.path.join(out_dir, "history.png"))]
    if "m" in ens.observables:
        written.append(plot_histogram_m(ens, os.path.join(out_dir, "histogram_m.png"), therm))
    if "slice_sums" in ens.observables:
        written.append(plot_correlator(ens, os.path.join(out_dir, "correlator.png"), therm, bin))
    if ens.has_configs:
        written.append(plot_configuration(ens, os.path.join(out_dir, "configuration.png")))
    return written
