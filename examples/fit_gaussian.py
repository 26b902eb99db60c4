"""Example 2 of docs/fitting.md: the seed's Gaussian case, against its closed form.

    python examples/fit_gaussian.py [--out out/fit_gaussian] [--ranks 2] [--n 2000]

Data: exact independent draws of the homogeneous Gaussian S* = sum (a* phi^2 + r* phi) - w* sum_links
phi phi on 16^2 (qftml.exact.gaussian_samples), twice: b = 0 with r* = 0 (fit tied w, a), and with the
linear term r* != 0 (fit tied w, a, r). `qftml fit` (examples/fit_gaussian.toml, `mpiexec -n ranks`,
one replica per rank: the replicas split the data rows) starts far away; the maximum-likelihood
couplings of tied families have a closed form, moment matching with the exact lattice propagator
(qftml.exact.gaussian_ml_tied), and the log-likelihood per site has an exact value (exact ln Z):
both are compared with what `fit` reports (its ln Z is the thermodynamic integration). Prints a
table and writes <out>/result.json and <out>/<case>_*.png (plots of qftml.plots.fit).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import h5py
import numpy as np

from qftml import exact

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = (16, 16)
CASES = {"b0": {"w": 0.35, "a": 1.0, "r": 0.0, "learn": ["w", "a"]},
         "linear": {"w": 0.35, "a": 1.0, "r": 0.3, "learn": ["w", "a", "r"]}}


def moments(x):
    d = x.ndim - 1
    phi2 = (x ** 2).mean()
    link = np.mean([(x * np.roll(x, -1, axis=1 + mu)).mean() for mu in range(d)])
    return phi2, link, x.mean()


def exact_ll(x, w, a, r):
    """Exact log-likelihood per site of rows x under the homogeneous Gaussian (w, a, r)."""
    phi2, link, phi = moments(x)
    d = x.ndim - 1
    V = x[0].size
    s = a * phi2 - w * d * link + r * phi            # <S>/V
    return -s - exact.gaussian_log_z(SHAPE, w, a, r=r) / V


def run_case(name, case, args):
    out = args.out
    n_total = int(round(args.n / 0.8))
    x = exact.gaussian_samples(SHAPE, case["w"], case["a"], n_total, seed=7 + len(name), r=case["r"])
    data = os.path.join(out, f"{name}.npy")
    np.save(data, x)
    path = os.path.join(out, f"{name}.h5")
    sets = [f"data.files=['{data}']", f"output.path='{path}'", f"model.learn={json.dumps(case['learn'])}",
            f"model.tied={json.dumps(case['learn'])}", f"training.replicas={args.ranks}"]
    cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(args.ranks),
           os.path.join(os.path.dirname(sys.executable), "qftml"), "fit", os.path.join(HERE, "fit_gaussian.toml"),
           "--quiet"] + [a for s in sets for a in ("--set", s)]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    n_train = int(round(0.8 * n_total))
    train, hold = x[:n_train], x[n_train:]
    w_ml, a_ml, r_ml = exact.gaussian_ml_tied(SHAPE, *moments(train))
    if "r" not in case["learn"]:   # r fixed at 0: moment matching of the two second moments around 0
        w_ml, a_ml, r_ml = exact.gaussian_ml_tied(SHAPE, *moments(train)[:2])
    with h5py.File(path) as f:
        got = {k: float(np.ravel(f[f"couplings/{k}"][()])[0]) for k in ("w", "a", "r")}
        cr = json.loads(f["fisher"].attrs["tied"])
        lik = {k: f[f"likelihood/{k}"][()] for k in f["likelihood"]}
    ml = {"w": w_ml, "a": a_ml, "r": r_ml}
    res = {"true": {k: case[k] for k in ("w", "a", "r")}, "ml_closed_form": ml, "fit": got, "cramer_rao": cr,
           "n_train": n_train, "n_holdout": n_total - n_train,
           "ll_fit": {k: float(lik[k][-1]) for k in ("train", "train_err", "holdout", "holdout_err", "f_s_err")},
           "ll_exact_at_fit": {"train": exact_ll(train, got["w"], got["a"], got["r"]),
                               "holdout": exact_ll(hold, got["w"], got["a"], got["r"])},
           "ll_exact_at_ml": {"train": exact_ll(train, w_ml, a_ml, r_ml), "holdout": exact_ll(hold, w_ml, a_ml, r_ml)},
           "ll_first": {"train": float(lik["train"][0]), "train_err": float(lik["train_err"][0])}}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/fit_gaussian")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--n", type=int, default=2000, help="training configurations")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results = {name: run_case(name, case, args) for name, case in CASES.items()}
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(results, f, indent=1)
    for name, res in results.items():
        print(f"\n{name}: {res['n_train']} training rows, {res['n_holdout']} held out")
        print(f"{'':6s} {'true':>9s} {'ML (closed form)':>17s} {'fit':>9s} {'CR sigma':>9s} {'(fit-ML)/CR':>12s}")
        for k in ("w", "a", "r"):
            cr = res["cramer_rao"].get(k)
            z = (res["fit"][k] - res["ml_closed_form"][k]) / cr if cr else float("nan")
            print(f"{k:6s} {res['true'][k]:9.5f} {res['ml_closed_form'][k]:17.5f} {res['fit'][k]:9.5f} "
                  f"{cr if cr else float('nan'):9.5f} {z:12.2f}")
        ll, ex = res["ll_fit"], res["ll_exact_at_fit"]
        print(f"log-likelihood per site (fit, TI)   train {ll['train']:.5f} +- {ll['train_err']:.5f}, "
              f"held out {ll['holdout']:.5f} +- {ll['holdout_err']:.5f} (ln Z part +- {ll['f_s_err'] / 256:.5f})")
        print(f"exact at the fitted couplings       train {ex['train']:.5f}, held out {ex['holdout']:.5f}")
        ml = res["ll_exact_at_ml"]
        print(f"exact at the ML couplings           train {ml['train']:.5f}, held out {ml['holdout']:.5f}")
        print(f"at epoch 0 (start)                  train {res['ll_first']['train']:.5f} +- "
              f"{res['ll_first']['train_err']:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
