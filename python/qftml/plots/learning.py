"""Plots of a trainer's output file (`qftml learn`; matplotlib, Agg backend: no display needed).

Exports:
    plot_training(path, prefix, targets=None) -> [written paths]
        <prefix>_couplings.png    every learned family vs epoch on a log axis: mean, mean +- std,
                                  min-max band, target (the paper's Fig. 2)
        <prefix>_histograms.png   initial (/checkpoints/epoch_0) and learned (/couplings) couplings,
                                  learned minus target where the target is homogeneous
    targets: {family: value}; default: the homogeneous [target] of the file's config (none for a
    couplings-file target).
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


def _read(path):
    import h5py

    hist = read_history(path)
    with h5py.File(path, "r") as f:
        fams = [k for k in FAMILIES if f"history/couplings/{k}" in f]
        final = {k: f[f"couplings/{k}"][()] for k in fams if f"couplings/{k}" in f}
        first = f["checkpoints/epoch_0"] if "checkpoints/epoch_0" in f else {}
        initial = {k: first[k][()] for k in fams if k in first}
        cfg = json.loads(f.attrs["config"])
    stats = {k: {s: hist[f"couplings/{k}/{s}"] for s in ("mean", "std", "min", "max")} for k in fams}
    return hist["epoch"] + 1, fams, stats, initial, final, cfg


def _default_targets(cfg):
    from qftml.engine.action import homogeneous_couplings

    tg = cfg["target"]
    if tg["couplings"]:
        return {}
    return homogeneous_couplings(len(cfg["lattice"]["shape"]), tg["kappa"], tg["mu2"], tg["lam"], tg["h"])


def _couplings_vs_epoch(epoch, learned, stats, targets, out):
    fig, axes = plt.subplots(1, len(learned), figsize=(4 * len(learned), 3.4), squeeze=False)
    for ax, k in zip(axes[0], learned):
        s = stats[k]
        ax.fill_between(epoch, s["min"], s["max"], color="C0", alpha=0.15, label="min-max")
        ax.fill_between(epoch, s["mean"] - s["std"], s["mean"] + s["std"], color="C0", alpha=0.35, label="mean +- std")
        ax.plot(epoch, s["mean"], color="C0", lw=1.2, label="mean")
        if k in targets:
            ax.axhline(targets[k], color="k", ls="--", lw=1, label="target")
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(k)
    axes[0][0].legend(fontsize=7)
    save_figure(fig, out, dpi=90)


def _histograms(learned, initial, final, targets, out):
    fig, axes = plt.subplots(2, len(learned), figsize=(4 * len(learned), 5.6), squeeze=False)
    for col, k in enumerate(learned):
        top, bottom = axes[0][col], axes[1][col]
        v0 = np.ravel(initial.get(k, []))
        if v0.size:
            top.hist(v0, bins=40, color="C0")
        if k in targets:
            top.axvline(targets[k], color="k", ls="--", lw=1, label="target")
        top.set_title(f"initial {k}")
        v = np.ravel(final.get(k, []))
        if k in targets:
            bottom.hist(v - targets[k], bins=40, color="C1")
            bottom.axvline(0.0, color="k", ls="--", lw=1)
            bottom.set_title(f"learned {k} - target ({k} = {targets[k]:g})")
        else:
            bottom.hist(v, bins=40, color="C1")
            bottom.set_title(f"learned {k}")
        bottom.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    save_figure(fig, out, dpi=90)


def plot_training(path, prefix, targets=None) -> list:
    epoch, fams, stats, initial, final, cfg = _read(path)
    targets = _default_targets(cfg) if targets is None else targets
    learned = [k for k in fams if k in cfg["model"]["learn"]]
    out = [f"{prefix}_couplings.png", f"{prefix}_histograms.png"]
    _couplings_vs_epoch(epoch, learned, stats, targets, out[0])
    _histograms(learned, initial, final, targets, out[1])
    return out


__all__ = ["plot_training"]
