"""`make demo`: a short version of example 1 of arXiv:2102.09449 on 2 MPI ranks (~1-2 minutes).

An inhomogeneous phi^4 action S on a 16^2 lattice, with random couplings w in [0.5, 1.5],
a in [1, 2], b in [0.1, 0.3], learns the homogeneous target
    A = -sum_<xy> phi_x phi_y + 1.52425 sum phi^2 + 0.175 sum phi^4
by minimising F = <A - S>_p + F_S (natural-gradient descent on Cov_p(S - A, dS/dtheta)), with
2 replicas (one per rank) pooling their samples. It runs
    mpiexec -n 2 qftml learn examples/learn_homogeneous.toml --set training.epochs=300 ...
then prints how close every coupling family is to the target and where the plots are
(build/demo/learn_demo_couplings.png: the paper's Fig. 2, couplings vs epoch on a log axis).
The full example (1000 epochs, F estimates) is documented in docs/learning.md.
"""
import os
import subprocess
import sys
import time

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, ".venv", "bin")
OUT = os.path.join(ROOT, "build", "demo")
TARGET = {"w": 1.0, "a": 1.52425, "b": 0.175}


def main() -> int:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, "learn_demo.h5")
    cmd = [os.path.join(BIN, "mpiexec"), "-n", "2", os.path.join(BIN, "qftml"), "learn",
           os.path.join(ROOT, "examples", "learn_homogeneous.toml"),
           "--set", "training.epochs=300", "--set", "training.f_every=0", "--set", "training.f_samples=200",
           "--set", "training.checkpoint_every=0", "--set", f"output.path='{path}'"]
    print("running:", " ".join(cmd[:5]), "... (300 epochs, 2 replicas x 50 samples per epoch)", flush=True)
    t0 = time.time()
    code = subprocess.call(cmd, cwd=ROOT, stdin=subprocess.DEVNULL)
    if code:
        print(f"demo: qftml learn failed with exit code {code}", file=sys.stderr)
        return code
    with h5py.File(path, "r") as f:
        start = {k: f[f"checkpoints/epoch_0/{k}"][()].std() for k in TARGET}
        print(f"\nlearned in {time.time() - t0:.0f} s; couplings after {f['history/epoch'].shape[0]} epochs:")
        print(f"{'family':6s} {'target':>9s} {'mean':>9s} {'std':>8s} {'max |dev|':>10s} {'std at start':>13s}")
        for k, want in TARGET.items():
            v = f[f"couplings/{k}"][()]
            print(f"{k:6s} {want:9.5f} {v.mean():9.5f} {v.std():8.5f} {np.abs(v - want).max():10.5f} {start[k]:13.5f}")
        fe = f["free_energy"]
        print(f"\nbound at the end: F = {fe['F'][-1]:.3f} +- {fe['F_err'][-1]:.3f} "
              f"(<A - S> = {fe['a_minus_s'][-1]:.3f} +- {fe['a_minus_s_err'][-1]:.3f})")
    print(f"\nplots: {os.path.join(OUT, 'learn_demo_couplings.png')}\n       "
          f"{os.path.join(OUT, 'learn_demo_histograms.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
