"""Reweighting against the exact Gaussian oracle (docs/reweighting.md): one ensemble of a Gaussian S,
reweighted to a complex mass a -> a + i c along c, and to a real mass along da.

    .venv/bin/python examples/reweight_gaussian_oracle.py [--out docs/img] [--n 4000] [--L 8]

S = -w sum_nn phi phi + a sum phi^2 with w = 0.25, a = 1 (independence sampler, engine in memory). Exact:
<phi^2>_A = G_A(0) and the average phase Z_A / Z_{Re A} from qftml.exact.gaussian (complex a continued
analytically). Writes reweight_gaussian_complex_mass.png and reweight_gaussian_mass.png with the
exact curves, error bands and flagged (unreliable) points, and prints the tables.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

import qftml
from qftml import exact
from qftml.io.ensembles import Ensemble
from qftml.reweighting.targets import TargetSpec, compute_inputs, scan_targets
from qftml.reweighting.estimator import reweight_scan

W, A = 0.25, 1.0


def sample(L, n, seed=1):
    lat = qftml.Lattice((L, L))
    act = qftml.Action(lat, W, A, 0.0, 0.0)
    s = qftml.Sampler(act, seed=seed, algorithm="independence")
    s.thermalize(500)
    recs = []
    for _ in range(n):
        s.sweep(1)
        recs.append(qftml.measure(s.field, act))
    obs = {k: np.array([r[k] for r in recs]) for k in recs[0]}
    return Ensemble((L, L), obs, {"w": W, "a": A}, name="gauss")


def run(ens, key, values, base=TargetSpec(), ess_min=100.0):
    inp = compute_inputs([ens], scan_targets(base, key, values))
    return reweight_scan(inp.deltas, inp.primaries, params=[{key: v} for v in values], volume=inp.volume,
                         shape=inp.shape, derived=("chi", "binder", "xi2"), ess_min=ess_min, ensemble_name="g")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="docs/img")
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--L", type=int, default=8)
    args = p.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qftml.plots import save_figure

    L, shape = args.L, (args.L, args.L)
    ens = sample(L, args.n)
    os.makedirs(args.out, exist_ok=True)

    # complex mass: a -> a + i c
    cs = np.linspace(0.0, 0.8, 17)
    pts = run(ens, "da_imag", cs)
    fine = np.linspace(0, cs[-1], 200)
    g_ex = np.array([exact.gaussian_propagator(shape, W, A + 1j * c)[0, 0] for c in fine])
    lnz_re = exact.gaussian_log_z(shape, W, A)
    ph_ex = np.array([abs(np.exp(exact.gaussian_log_z(shape, W, A + 1j * c) - lnz_re)) for c in fine])
    bad = np.array([not q.reliable for q in pts])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.9))
    for ax, fn, lab in ((axes[0], np.real, "Re"), (axes[1], np.imag, "Im")):
        v = np.array([fn(complex(q.estimates["phi2"].value)) for q in pts])
        e = np.array([fn(complex(q.estimates["phi2"].error)) for q in pts])
        ax.plot(fine, fn(g_ex), "k-", lw=1, label="exact")
        ax.errorbar(cs[~bad], v[~bad], e[~bad], fmt="o", color="C0", ms=4, capsize=2, label="reweighted")
        if bad.any():
            ax.errorbar(cs[bad], v[bad], e[bad], fmt="o", mfc="white", mec="red", ecolor="red", ms=6,
                        capsize=2, label="flagged: unreliable")
        lo, hi = min(fn(g_ex).min(), v[~bad].min()), max(fn(g_ex).max(), v[~bad].max())
        ax.set_ylim(lo - 0.4 * (hi - lo) - 0.02, hi + 0.4 * (hi - lo) + 0.02)  # flagged points may leave the frame
        ax.set_xlabel("c  (A = S + i c sum phi^2)")
        ax.set_ylabel(f"{lab} <phi^2>")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax = axes[2]
    ph = np.array([q.abs_phase for q in pts])
    pe = np.array([q.abs_phase_error for q in pts])
    ax.semilogy(fine, ph_ex, "k-", lw=1, label="exact |Z_A / Z_ReA|")
    ax.errorbar(cs, ph, pe, fmt="o", ms=4, capsize=2, label="|<phase>| reweighted")
    ax.plot(cs, 3 * pe, "r--", lw=1, label="3 sigma (flag below)")
    if bad.any():
        ax.plot(cs[bad], ph[bad], "o", mfc="white", mec="red", ms=7, label="flagged")
    ax.set_xlabel("c")
    ax.set_ylabel("|average phase|")
    ax.set_ylim(max(1e-4, 0.3 * min(pe.min(), ph_ex.min())), 1.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Gaussian S (w = {W}, a = {A}) on {L}^2, {args.n} configurations -> complex mass a + i c",
                 fontsize=10)
    print(f"wrote {save_figure(fig, os.path.join(args.out, 'reweight_gaussian_complex_mass.png'))}")
    print(" c      Re<phi2>(err)         exact        Im<phi2>(err)        exact      |phase|(err)   exact  flags")
    for c, q in zip(cs, pts):
        g = exact.gaussian_propagator(shape, W, A + 1j * c)[0, 0]
        ex_ph = abs(np.exp(exact.gaussian_log_z(shape, W, A + 1j * c) - lnz_re))
        v, e = complex(q.estimates["phi2"].value), complex(q.estimates["phi2"].error)
        print(f"{c:4.2f}  {v.real:9.5f}({e.real:.5f})  {g.real:9.5f}  {v.imag:9.5f}({e.imag:.5f})  {g.imag:9.5f}  "
              f"{q.abs_phase:.4f}({q.abs_phase_error:.4f})  {ex_ph:.4f}  {','.join(q.flags) or 'ok'}")

    # real mass: a -> a + da
    das = np.linspace(-0.2, 0.6, 17)
    pts = run(ens, "da", das)
    fine = np.linspace(das[0], das[-1], 200)
    bad = np.array([not q.reliable for q in pts])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    ax = axes[0]
    v = np.array([np.real(q.estimates["phi2"].value) for q in pts])
    e = np.array([np.real(q.estimates["phi2"].error) for q in pts])
    ax.plot(fine, [exact.gaussian_propagator(shape, W, A + x)[0, 0] for x in fine], "k-", lw=1, label="exact")
    ax.fill_between(das, v - e, v + e, alpha=0.3, color="C0", lw=0)
    ax.errorbar(das[~bad], v[~bad], e[~bad], fmt="o", ms=4, color="C0", capsize=2, label="reweighted")
    if bad.any():
        ax.errorbar(das[bad], v[bad], e[bad], fmt="o", mfc="white", mec="red", ecolor="red", ms=6, capsize=2,
                    label="flagged: ESS < 100")
    ax.set_xlabel("da  (A = S + da sum phi^2)")
    ax.set_ylabel("<phi^2>")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.semilogy(das, [q.ess for q in pts], "o-", ms=4)
    ax.axhline(100, color="red", ls="--", label="ess_min = 100")
    ax.set_xlabel("da")
    ax.set_ylabel("effective sample size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"Gaussian S on {L}^2, {args.n} configurations -> mass a + da", fontsize=10)
    print(f"wrote {save_figure(fig, os.path.join(args.out, 'reweight_gaussian_mass.png'))}")
    print(" da     <phi2>(err)       exact      ESS   flags")
    for x, q in zip(das, pts):
        g = exact.gaussian_propagator(shape, W, A + x)[0, 0]
        v, e = np.real(q.estimates["phi2"].value), np.real(q.estimates["phi2"].error)
        print(f"{x:5.2f}  {v:8.5f}({e:.5f})  {g:8.5f}  {q.ess:7.1f}  {','.join(q.flags) or 'ok'}")


if __name__ == "__main__":
    main()
