"""Plots of a `qftml fit` output file (matplotlib, Agg backend: no display needed).

Exports:
    plot_fit(path, prefix) -> [written paths]
        <prefix>_couplings.png   every learned family vs epoch on a log axis (mean, mean +- std, min-max),
                                 the true value when known and homogeneous
        <prefix>_residuals.png   moment residuals (data - model) in units of their error vs epoch, and the
                                 log-likelihood per site of training and held-out data with error bars
        <prefix>_recovery.png    learned vs true couplings (scatter) when the true couplings are known
        <prefix>_images.png      2D lattices: a data configuration, the data's <phi>, the learned model's
                                 <phi> and samples of the learned model side by side
    read_truth(path, families) -> {family: global array} of the true couplings (the file's `truth` attribute)
"""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qftml.engine.action import FAMILIES  # noqa: E402
from qftml.io.history import read_history  # noqa: E402
from qftml.plots import save_figure  # noqa: E402
from qftml.plots.learning import _couplings_vs_epoch  # noqa: E402


def read_truth(path, families) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        truth = f.attrs.get("truth", "")
    truth = truth.decode() if isinstance(truth, bytes) else str(truth)
    if not truth:
        return {}
    with h5py.File(truth, "r") as f:
        g = f.get("couplings")
        return {} if g is None else {k: np.asarray(g[k][()]) for k in families if k in g}


def _residuals(hist, lik, out):
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.6))
    epoch = hist["epoch"] + 1
    for name in sorted(k for k in hist if k.startswith("residual_z/")):
        ax.plot(epoch, hist[name], lw=1, label=name.split("/", 1)[1])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("(data - model) / error")
    ax.set_title("moment residuals")
    ax.legend(fontsize=7, ncol=2)
    if lik:
        e = lik["epoch"]
        bx.errorbar(e, lik["train"], lik["train_err"], fmt="o-", ms=3, capsize=2, label="training data")
        if np.any(np.isfinite(lik["holdout"])):
            bx.errorbar(e, lik["holdout"], lik["holdout_err"], fmt="s--", ms=3, capsize=2, label="held-out data")
        bx.legend(fontsize=8)
    bx.set_xlabel("epoch")
    bx.set_ylabel("log-likelihood per site")
    bx.set_title("<-S>_data - ln Z (ln Z by TI)")
    save_figure(fig, out, dpi=90)


def _recovery(learned, final, truth, out):
    fams = [k for k in learned if k in truth and k in final]
    fig, axes = plt.subplots(1, len(fams), figsize=(3.8 * len(fams), 3.6), squeeze=False)
    for ax, k in zip(axes[0], fams):
        t = np.broadcast_to(truth[k], final[k].shape).ravel()
        v = final[k].ravel()
        ax.plot(t, v, ".", ms=3, alpha=0.6)
        lo, hi = min(t.min(), v.min()), max(t.max(), v.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel(f"true {k}")
        ax.set_ylabel(f"learned {k}")
        ax.set_title(f"{k}: rms(learned - true) = {np.sqrt(np.mean((v - t) ** 2)):.3g}")
    save_figure(fig, out, dpi=90)


def _images(f, out):
    panels = [("a data configuration", f["data/example"][()]), ("data <phi>", f["data/mean_phi"][()]),
              ("learned model <phi>", f["model/mean_phi"][()])]
    if "model/samples" in f:
        samples = f["model/samples"][()]
        panels += [(f"model sample {i + 1}", s) for i, s in enumerate(samples[:3])]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    lim = max(float(np.max(np.abs(p[1]))) for p in panels)
    for ax, (title, img) in zip(axes[0], panels):
        ax.imshow(img, cmap="gray", vmin=-lim, vmax=lim)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, out, dpi=90)


def plot_fit(path, prefix) -> list:
    import h5py

    hist = read_history(path)
    with h5py.File(path, "r") as f:
        cfg = json.loads(f.attrs["config"])
        fams = [k for k in FAMILIES if f"history/couplings/{k}" in f]
        final = {k: f[f"couplings/{k}"][()] for k in fams if f"couplings/{k}" in f}
        lik = read_history(path, "likelihood") if "likelihood" in f else {}
        shape = tuple(f.attrs["shape"])
        has_images = len(shape) == 2 and "model/mean_phi" in f
        if has_images:
            _images(f, f"{prefix}_images.png")
    learned = [k for k in fams if k in cfg["model"]["learn"]]
    truth = read_truth(path, learned)
    stats = {k: {s: hist[f"couplings/{k}/{s}"] for s in ("mean", "std", "min", "max")} for k in fams}
    targets = {k: float(np.ravel(v)[0]) for k, v in truth.items() if np.ptp(v) == 0}
    out = [f"{prefix}_couplings.png", f"{prefix}_residuals.png"]
    _couplings_vs_epoch(hist["epoch"] + 1, learned, stats, targets, out[0])
    _residuals(hist, lik, out[1])
    if truth:
        out.append(f"{prefix}_recovery.png")
        _recovery(learned, final, truth, out[-1])
    if has_images:
        out.append(f"{prefix}_images.png")
    return out


__all__ = ["plot_fit", "read_truth"]
