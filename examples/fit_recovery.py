"""Example 1 of docs/fitting.md: recovery of known couplings theta* from data made by `qftml sample`.

    python examples/fit_recovery.py [--out out/fit_recovery] [--ranks 2] [--n 3000]

(A) homogeneous: the seed's target (kappa = 1, mu2 = -0.9515, lam = 0.7: w* = 1, a* = 1.52425,
    b* = 0.175) on 16^2, sampled with Metropolis + Swendsen-Wang; `fit` learns tied w, a, b from a
    random start (examples/fit_recovery.toml with model.tied = [w, a, b]).
(B) inhomogeneous: random w*, a*, b* per link/site on 16^2 (uniform in the ranges below, engine
    Philox), written as a couplings file and sampled by `qftml sample` ([action] couplings); `fit`
    learns untied w, a, b from a random start.
Errors: Cramer-Rao, Cov(theta_hat) = I^-1 / N_eff with I = Cov_p(dS/dtheta) the model's Fisher
blocks (written by `fit` to /fisher: the exact tied block for (A); each site's block for (B), which
ignores the couplings between sites and so underestimates the error somewhat) and N_eff =
N / (2 tau_int), tau_int the largest integrated autocorrelation time of the data's sufficient
statistics (Gamma method). Prints the pulls (learned - true) / sigma and writes
<out>/result.json, <out>/{homogeneous,inhomogeneous}_*.png (qftml.plots.fit) and
<out>/recovery_pulls.png.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
L = 16
RANGES = {"w": (0.3, 0.7), "a": (1.0, 1.5), "b": (0.1, 0.3), "r": 0.0}

SAMPLE = """[lattice]
shape = [{L}, {L}]
[action]
{action}
[sampler]
algorithm = "metropolis"
hits = 2
thermalize = 1000
sweeps = {sweeps}
every = {every}
seed = {seed}
cluster = "{cluster}"
checkpoint_every = 0
[output]
path = "{path}"
configs = true
overwrite = true
"""


def run(cmd):
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def sample(out, name, action, n, every, seed, ranks, cluster):
    cfg = os.path.join(out, f"{name}_sample.toml")
    path = os.path.join(out, f"{name}_data.h5")
    with open(cfg, "w") as f:
        f.write(SAMPLE.format(L=L, action=action, sweeps=n * every, every=every, seed=seed, path=path,
                              cluster=cluster))
    run([os.path.join(BIN, "mpiexec"), "-n", str(ranks), os.path.join(BIN, "qftml"), "sample", cfg, "--quiet"])
    return path


def data_tau(path):
    """Largest tau_int of the stored sufficient statistics (sum phi phi, sum phi^2, sum phi^4)."""
    from qftml.io.ensembles import open_ensemble
    from qftml.stats.errors import tau_int

    with open_ensemble(path) as ens:
        obs = ens.observables
        return max(tau_int(obs[k])[0] for k in ("sum_links_nn", "sum_phi2", "sum_phi4"))


def fit(out, name, data, ranks, tied, extra=()):
    path = os.path.join(out, f"{name}.h5")
    sets = [f"data.files=['{data}']", f"output.path='{path}'", f"model.tied={json.dumps(tied)}",
            f"training.replicas={ranks}", *extra]
    run([os.path.join(BIN, "mpiexec"), "-n", str(ranks), os.path.join(BIN, "qftml"), "fit",
         os.path.join(HERE, "fit_recovery.toml"), "--quiet"] + [a for s in sets for a in ("--set", s)])
    return path


def homogeneous(args):
    from qftml.engine.action import homogeneous_couplings

    true = homogeneous_couplings(2, 1.0, -0.9515, 0.7)
    data = sample(args.out, "homogeneous", "kappa = 1.0\nmu2 = -0.9515\nlam = 0.7", args.n, 5, 11, args.ranks,
                  "swendsen-wang")
    tau = data_tau(data)
    # three tied couplings near the critical point: a nearly flat direction of the likelihood (the
    # Fisher block is ill-conditioned), so the natural gradient needs little damping to move along it
    path = fit(args.out, "homogeneous", data, args.ranks, ["w", "a", "b"], ["training.damping=0.001"])
    with h5py.File(path) as f:
        cr = json.loads(f["fisher"].attrs["tied"])
        got = {k: float(np.ravel(f[f"couplings/{k}"][()])[0]) for k in ("w", "a", "b")}
    rows = {}
    for k in ("w", "a", "b"):
        sigma = cr[k] * np.sqrt(2 * tau)
        rows[k] = {"true": true[k], "fit": got[k], "sigma": sigma, "pull": (got[k] - true[k]) / sigma}
    return {"tau_int": tau, "couplings": rows}


def inhomogeneous(args):
    import qftml
    from mpi4py import MPI

    from qftml.io.couplings import write_global_couplings
    from qftml.learning.model import random_couplings

    lat = qftml.Lattice((L, L), comm=MPI.COMM_SELF)
    true = random_couplings(lat, 2024, RANGES)
    cpath = os.path.join(args.out, "true_couplings.h5")
    write_global_couplings(cpath, true)
    data = sample(args.out, "inhomogeneous", f'couplings = "{cpath}"', args.n, 5, 12, args.ranks, "none")
    tau = data_tau(data)
    path = fit(args.out, "inhomogeneous", data, args.ranks, [], [f"data.truth='{cpath}'"])
    out, pulls = {"tau_int": tau}, {}
    with h5py.File(path) as f:
        for k in ("w", "a", "b"):
            got, sig = f[f"couplings/{k}"][()], f[f"fisher/cramer_rao/{k}"][()] * np.sqrt(2 * tau)
            p = (got - true[k]) / sig
            pulls[k] = p.ravel()
            out[k] = {"rms_error": float(np.sqrt(np.mean((got - true[k]) ** 2))), "mean_sigma": float(sig.mean()),
                      "pull_mean": float(p.mean()), "pull_std": float(p.std()),
                      "within_2_sigma": float(np.mean(np.abs(p) < 2)), "n": int(p.size)}
    return out, pulls


def plot_pulls(pulls, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qftml.plots import save_figure

    fig, axes = plt.subplots(1, len(pulls), figsize=(4 * len(pulls), 3.2))
    x = np.linspace(-5, 5, 200)
    for ax, (k, p) in zip(axes, pulls.items()):
        ax.hist(p, bins=40, range=(-5, 5), density=True, color="C0", alpha=0.7)
        ax.plot(x, np.exp(-x * x / 2) / np.sqrt(2 * np.pi), "k--", lw=1, label="N(0, 1)")
        ax.set_title(f"{k}: (learned - true) / sigma_CR, std {p.std():.2f}")
        ax.legend(fontsize=7)
    save_figure(fig, path, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/fit_recovery")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--n", type=int, default=3000, help="data configurations per case (20% held out)")
    ap.add_argument("--only", choices=("homogeneous", "inhomogeneous"), default=None)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    result = {}
    saved = os.path.join(args.out, "result.json")
    if args.only and os.path.exists(saved):   # one case again: keep the other's result
        with open(saved) as f:
            result = json.load(f)
    if args.only != "inhomogeneous":
        result["homogeneous"] = homogeneous(args)
        h = result["homogeneous"]
        print(f"\n(A) homogeneous, tau_int of the data {h['tau_int']:.2f}")
        for k, r in h["couplings"].items():
            print(f"  {k}: true {r['true']:.5f}  fit {r['fit']:.5f}  sigma_CR {r['sigma']:.5f}  pull {r['pull']:+.2f}")
    if args.only != "homogeneous":
        result["inhomogeneous"], pulls = inhomogeneous(args)
        plot_pulls(pulls, os.path.join(args.out, "recovery_pulls.png"))
        h = result["inhomogeneous"]
        print(f"\n(B) inhomogeneous {L}^2, tau_int of the data {h['tau_int']:.2f}")
        for k in ("w", "a", "b"):
            r = h[k]
            print(f"  {k}: rms(learned - true) {r['rms_error']:.4f}, mean sigma_CR {r['mean_sigma']:.4f}, pulls "
                  f"mean {r['pull_mean']:+.2f} std {r['pull_std']:.2f}, |pull| < 2: {100 * r['within_2_sigma']:.0f}% "
                  f"of {r['n']}")
    with open(saved, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
