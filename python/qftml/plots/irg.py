"""PNG plots of an inverse-RG run (matplotlib, Agg): the figures of docs/irg.md.

Exports:
    plot_configs(result, path, max_pixels=256)   one configuration per size (the direct L ensemble,
                                                 then each level file or its snapshot), strided
    plot_fss(result, path)     chi, <|m|>, U against L: the carried configurations at mu2* (points)
                               and the whole L ensemble times s^k at mu2* and mu2* +- 0.01 (lines)
    plot_flow(result, path)    Binder curves of the direct and upscaled ensembles; the flow mu2 -> mu2'
    plot_all(result, stem=None) -> [paths]   all three as <stem>_configs.png, _fss.png, _flow.png
(`result` is a qftml.rg.pipeline.IrgResult.)
"""
from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from qftml.io.json_output import output_stem  # noqa: E402
from qftml.plots import save_figure  # noqa: E402
from qftml.stats import finite_size as fs  # noqa: E402

ISING_BINDER = 0.61069   # 2D Ising U* on periodic L x L lattices


def plot_configs(result, path, max_pixels=256):
    """One configuration per size (first record of each file), read with a stride so that at most
    max_pixels per side are loaded."""
    import h5py

    Ls = result.levels["L"]
    files = [result.paths["direct"][int(Ls[0])]]
    for p, stored, snap in zip(result.levels["files"], result.levels["stored"], result.levels["snapshots"]):
        files.append(p if stored else (f"{output_stem(p)}_snapshot.h5" if snap else None))
    panels = [(int(L), p) for L, p in zip(Ls, files) if p and os.path.exists(p)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.5))
    axes = np.atleast_1d(axes)
    for ax, (L, p) in zip(axes, panels):
        with h5py.File(p, "r") as f:
            step = max(1, L // max_pixels)
            img = f["configs"][0, ::step, ::step]
        ax.imshow(img, cmap="RdBu_r", vmin=-2.5, vmax=2.5, interpolation="nearest")
        ax.set_title(f"L = {L}" + (f" (every {step}th site)" if step > 1 else ""), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    save_figure(fig, path, dpi=90)


def plot_fss(result, path):
    Ls = result.levels["L"]
    large = result.series["large"]
    mu2_0, mu2_star, gain = large.mu2, result.mu2_star, result.gain
    b = int(round(Ls[1] / Ls[0]))
    d = int(round(np.log(large.volume) / np.log(large.L)))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    Lf = np.geomspace(Ls[0], Ls[-1], 50)
    series = [fs.Series("lvl", {"abs_m": dd["abs_m"], "m2": dd["m2"], "m4": dd["m4"], "sum_phi2": dd["sum_phi2_src"]},
                        int(Ls[k]) ** d, int(Ls[k]), mu2_0) for k, dd in sorted(result.levels["per_level"].items())]
    moms = [fs.moments(s, mu2_star - mu2_0) for s in series]
    axes[0].loglog(Ls, [m["chi"] for m in moms], "o", color="k", ms=5, label="measured, mu2*")
    axes[1].loglog(Ls, [m["abs_m"] for m in moms], "o", color="k", ms=5, label="measured, mu2*")
    axes[2].semilogx(Ls, [m["U"] for m in moms], "o", color="k", ms=5, label="measured, mu2*")
    if np.isfinite(gain):
        kk = np.log(Lf / Ls[0]) / np.log(b)
        for shift, color in ((-0.01, "C0"), (0.0, "C1"), (0.01, "C2")):
            m0 = fs.moments(large, mu2_star + shift - mu2_0)
            lab = f"all {large.n} x s^k, mu2 = {mu2_star + shift:.4f}"
            axes[0].loglog(Lf, m0["chi"] * (b ** d * gain ** 2) ** kk, "-", color=color, label=lab)
            axes[1].loglog(Lf, m0["abs_m"] * gain ** kk, "-", color=color, label=lab)
            axes[2].semilogx(Lf, np.full_like(Lf, m0["U"]), "-", color=color, label=lab)
    axes[0].loglog(Lf, moms[0]["chi"] * (Lf / Ls[0]) ** 1.75, ":", color="k", label="slope 7/4")
    axes[1].loglog(Lf, moms[0]["abs_m"] * (Lf / Ls[0]) ** -0.125, ":", color="k", label="slope -1/8")
    for ax, name in zip(axes, (r"$\chi$", r"$\langle|m|\rangle$", "U")):
        ax.set_xlabel("L")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    axes[2].set_ylim(0, 0.7)
    fig.suptitle(f"upscaled ensembles: points {series[0].n} configurations per size at mu2* = {mu2_star:.4f}; "
                 f"lines: the whole L ensemble with m_k = s^k m_0 (s = {gain:.4f}) at mu2* and mu2* +- 0.01",
                 fontsize=8)
    save_figure(fig, path)


def plot_flow(result, path):
    small, large, small_up = (result.series[k] for k in ("small", "large", "small_up"))
    mu2_0, mu2_c, lam = large.mu2, result.mu2_c, result.flow["slope"]
    mu2_grid, flow_vals = result.flow["mu2"], result.flow["mu2_prime"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    grid = np.linspace(mu2_0 - result.window, mu2_0 + result.window, 41)
    for s, lab in ((small, f"direct L={small.L}"), (large, f"direct L={large.L}"),
                   (small_up, f"upscaled {small.L}->{large.L}")):
        axes[0].plot(grid, [fs.moments(s, x - mu2_0)["U"] for x in grid], label=lab)
    for s in result.series["smaller"]:
        axes[0].plot(grid, [fs.moments(s, x - mu2_0)["U"] for x in grid], "--", label=f"direct L={s.L}")
    axes[0].axhline(ISING_BINDER, color="gray", lw=0.5, ls="--")
    axes[0].axvline(mu2_c, color="k", lw=0.5)
    axes[0].axvline(result.mu2_star, color="k", lw=0.5, ls=":")
    axes[0].set_xlabel("mu2")
    axes[0].set_ylabel("U")
    axes[0].legend(fontsize=8)
    axes[1].plot(mu2_grid, flow_vals, "o", label="Binder matching")
    axes[1].plot(mu2_grid, mu2_c + lam * (mu2_grid - mu2_c), "-", label=f"slope {lam:.3f}")
    axes[1].plot(mu2_grid, mu2_c + 0.5 * (mu2_grid - mu2_c), ":", label="nu = 1: slope 1/2")
    axes[1].plot(mu2_grid, mu2_grid, "k-", lw=0.5)
    axes[1].set_xlabel("mu2 (ensemble at L/b, upscaled)")
    axes[1].set_ylabel("mu2' (direct L, same U)")
    axes[1].legend(fontsize=8)
    save_figure(fig, path)


def plot_all(result, stem=None) -> list:
    stem = output_stem(result.paths["results"]) if stem is None else stem
    out = []
    for name, fn in (("configs", plot_configs), ("fss", plot_fss), ("flow", plot_flow)):
        path = f"{stem}_{name}.png"
        fn(result, path)
        out.append(path)
    return out
