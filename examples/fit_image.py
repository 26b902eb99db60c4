"""Example 3 of docs/fitting.md: learn per-site couplings from an image; sample the learned action.

    python examples/fit_image.py [--out out/fit_image] [--ranks 2]

Runs `qftml fit examples/fit_image.toml` on matplotlib's bundled sample image (grace_hopper.jpg) as
noisy copies (see the config for the scaling), then compares the learned couplings with the exact
answer for independent Gaussian sites (w = 0, a = 1 / (2 sigma^2), b = 0, r_x = -2 a <phi_x>_data) and the
learned model's <phi> with the data's (--analyze-only: only this comparison, on an existing output).
Writes <out>/image_*.png (qftml.plots.fit: the data, the
learned <phi> and samples of the learned model side by side) and <out>/result.json.
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


def main():
    import matplotlib

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="out/fit_image")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--analyze-only", action="store_true", help="only the comparison, on an existing <out>/image.h5")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    image = os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")
    path = os.path.join(args.out, "image.h5")
    cmd = [os.path.join(BIN, "mpiexec"), "-n", str(args.ranks), os.path.join(BIN, "qftml"), "fit",
           os.path.join(HERE, "fit_image.toml"), "--quiet", "--set", f"data.files=['{image}']",
           "--set", f"output.path='{path}'"]
    if not args.analyze_only:
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    with h5py.File(path) as f:
        cfg = json.loads(f.attrs["config"])
        sigma = cfg["data"]["image_noise"]
        a, r, w, b = (f[f"couplings/{k}"][()] for k in ("a", "r", "w", "b"))
        learned = json.loads(f.attrs["config"])["model"]["learn"]
        data_mean, model_mean = f["data/mean_phi"][()], f["model/mean_phi"][()]
        lik = {k: f[f"likelihood/{k}"][()] for k in f["likelihood"]}
        cr = {k: f[f"fisher/cramer_rao/{k}"][()] for k in learned if f"fisher/cramer_rao/{k}" in f}
        cr_a, cr_r, cr_w = cr["a"], cr["r"], cr.get("w", np.full(1, np.nan))
    a_exact = 1 / (2 * sigma ** 2)
    res = {"w_mean": float(w.mean()), "w_std": float(w.std()), "w_cr_mean": float(cr_w.mean()),
           "b_mean": float(b.mean()), "b_max": float(b.max()),
           "a_mean": float(a.mean()), "a_std": float(a.std()), "a_exact": a_exact,
           "a_cr_mean": float(cr_a.mean()), "r_vs_exact_rms": float(np.sqrt(np.mean((r + 2 * a * data_mean) ** 2))),
           "r_cr_mean": float(cr_r.mean()),
           "model_vs_data_mean_rms": float(np.sqrt(np.mean((model_mean - data_mean) ** 2))),
           "data_mean_range": [float(data_mean.min()), float(data_mean.max())],
           "ll_train": [float(lik["train"][-1]), float(lik["train_err"][-1])],
           "ll_holdout": [float(lik["holdout"][-1]), float(lik["holdout_err"][-1])],
           "ll_first": [float(lik["train"][0]), float(lik["train_err"][0])],
           "ll_exact_independent_gaussian": float(-0.5 * np.log(2 * np.pi * sigma ** 2) - 0.5)}
    with open(os.path.join(args.out, "result.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
