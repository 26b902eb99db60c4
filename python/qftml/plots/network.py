"""Plots of `qftml network`: receptive fields, data against model samples, log-likelihood vs epoch.

Exports:
    receptive_fields(w, path, units=None, title="") -> path   w[:, j] of chosen hidden units as images
                                                   (square visible layers; else as bars)
    data_vs_samples(data, samples, path, n=10) -> path        two rows of images
    likelihood_history(path_h5, path) -> path                 held-out / training ln p per sample vs epoch
                                                   (the AIS estimates), reconstruction error beside
    plot_network(path_h5, nets, data, seed) -> [paths]        all of the above for an output file
"""
from __future__ import annotations

import numpy as np

from qftml.plots import save_figure


def _side(n):
    s = int(round(np.sqrt(n)))
    return s if s * s == n else None


def receptive_fields(w, path, units=None, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.asarray(w)
    units = list(range(min(w.shape[1], 32))) if units is None else list(units)
    cols = min(8, len(units))
    rows = (len(units) + cols - 1) // cols
    side = _side(w.shape[0])
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.4), squeeze=False)
    for ax, j in zip(axes.ravel(), units):
        lim = np.abs(w[:, j]).max() or 1.0
        if side:
            ax.imshow(w[:, j].reshape(side, side), cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:
            ax.bar(np.arange(w.shape[0]), w[:, j])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"h{j}", fontsize=7)
    for ax in axes.ravel()[len(units):]:
        ax.axis("off")
    fig.suptitle(title or "receptive fields w[:, j]", fontsize=9)
    return save_figure(fig, path)


def data_vs_samples(data, samples, path, n=10):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = _side(data.shape[1])
    n = min(n, len(data), len(samples))
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for r, (rows, label) in enumerate(((data, "data"), (samples, "model"))):
        for c in range(n):
            ax = axes[r, c]
            if side:
                ax.imshow(rows[c].reshape(side, side), cmap="gray_r")
            else:
                ax.plot(rows[c])
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label)
    return save_figure(fig, path)


def likelihood_history(path_h5, path):
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    with h5py.File(path_h5, "r") as f:
        for k in sorted(f.get("history", {}), key=int):
            rec = f[f"history/{k}/recon_error"][()]
            a2.plot(np.arange(1, len(rec) + 1), rec, label=f"layer {k}")
            if f"ais/{k}" in f:
                g = f[f"ais/{k}"]
                a1.errorbar(g["epoch"][()], g["ll_test"][()], yerr=g["log_z_err"][()], marker="o", ms=3,
                            label=f"layer {k} held-out")
                a1.plot(g["epoch"][()], g["ll_train"][()], ls="--", label=f"layer {k} train")
            if f"layers/{k}" in f:
                at = f[f"layers/{k}"].attrs
                a1.errorbar([at["epochs"]], [at["ll_test"]], yerr=[at["ll_test_err"]], marker="s", color="k")
    a1.set_xlabel("epoch")
    a1.set_ylabel("ln p per sample (AIS)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("reconstruction error")
    for a in (a1, a2):
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    return save_figure(fig, path)


def plot_network(path_h5, nets, data, seed):
    from qftml.io.json_output import output_stem
    from qftml.network.stack import sample_stack

    stem = output_stem(path_h5)
    out = [receptive_fields(nets[0].w, f"{stem}_receptive_fields.png", title=f"layer 0 ({nets[0].preset})")]
    samples = sample_stack(nets, 10, seed)
    out.append(data_vs_samples(data[:10], samples, f"{stem}_samples.png"))
    out.append(likelihood_history(path_h5, f"{stem}_likelihood.png"))
    return out
