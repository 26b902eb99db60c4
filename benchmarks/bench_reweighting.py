"""Reweighting throughput: configurations reweighted per second (issue 5, docs/reweighting.md "Performance").

    .venv/bin/python benchmarks/bench_reweighting.py [--ranks 1 2] [--out build/bench_reweighting.json]

For 64^2 and 1024^2 lattices it writes an ensemble file (random fields; the throughput does not
depend on the physics) and times, on 1 and 2 ranks (it re-launches itself under mpiexec):
  stats    A - S from the stored sufficient statistics (a scan of 11 target points, target
           da, da_imag: complex), followed by the weighted averages of every primary observable
           (estimator without error analysis): configurations per second per target point
  configs  A - S for a target with nnn links the ensemble did not store: each rank reads its
           hyperslab of every configuration from the file and sums the engine's local densities
           (one Allreduce at the end): configurations per second, with the file read included
  errors   the full estimator with Gamma-method and jackknife errors for one point, on the
           scalar observables and chi, Binder, xi2 (rank 0 only; the correlator adds one
           Gamma-method analysis per time slice)
Prints a markdown table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = {64: 4000, 1024: 40}      # L -> configurations in the file with /configs
N_STATS = 20000                   # records of the observables-only file (sufficient statistics)


def write_file(path, L, n, seed=0, configs=True):
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "qftml-ensemble"
        f.attrs["format_version"] = 1
        f.attrs["n_records"] = n
        f.attrs["lattice"] = json.dumps({"shape": [L, L]})
        ds = f.create_dataset("configs", (n, L, L), dtype="f8", chunks=(1, L, L)) if configs else None
        obs = {k: np.empty(n) for k in ("M", "sum_phi2", "sum_phi4", "link_sum_0", "link_sum_1", "action")}
        slices = np.empty((n, L))
        small = min(L, 64)  # observables-only file: fields of a 64^2 patch, rescaled (values do not matter)
        for i in range(n):
            phi = rng.normal(0.0, 0.7, (L, L) if configs else (small, small))
            if configs:
                ds[i] = phi
            obs["M"][i] = phi.sum()
            obs["sum_phi2"][i] = (phi ** 2).sum()
            obs["sum_phi4"][i] = (phi ** 4).sum()
            obs["link_sum_0"][i] = (phi * np.roll(phi, -1, 0)).sum()
            obs["link_sum_1"][i] = (phi * np.roll(phi, -1, 1)).sum()
            slices[i] = np.resize(phi.sum(axis=1), L)
        V = L * L
        m = obs["M"] / V
        obs.update({"m": m, "abs_m": np.abs(m), "m2": m * m, "m4": m ** 4})
        obs["action"] = -(obs["link_sum_0"] + obs["link_sum_1"]) + 1.5 * obs["sum_phi2"] + 0.175 * obs["sum_phi4"]
        for k, v in obs.items():
            f[f"observables/{k}"] = v
        f["observables/slice_sums"] = slices
        f["couplings/w"] = 1.0
        f["couplings/a"] = 1.5
        f["couplings/b"] = 0.175
        f["couplings/r"] = 0.0
        f["couplings"].attrs["field"] = "real"
        f["couplings"].attrs["extra_offsets"] = "[]"


def inner(args):
    from mpi4py import MPI

    from qftml.io.ensembles import open_ensemble
    from qftml.reweighting.targets import TargetSpec, compute_inputs, scan_targets
    from qftml.reweighting.estimator import reweight, reweight_scan

    comm = MPI.COMM_WORLD
    out = {}
    for L, n in CASES.items():
        path = os.path.join(args.dir, f"bench_rw_{L}.h5")
        ens = open_ensemble(path)
        stats = open_ensemble(os.path.join(args.dir, f"bench_rw_{L}_stats.h5"))
        targets = scan_targets(TargetSpec(da_imag=0.01), "da", np.linspace(-0.01, 0.01, 11))
        comm.Barrier()
        t = time.perf_counter()
        inp = compute_inputs([stats], targets, comm=comm)
        pts = reweight_scan(inp.deltas, inp.primaries, errors=False, volume=inp.volume, shape=inp.shape)
        t_stats = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
        assert len(pts) == len(targets)
        comm.Barrier()
        t = time.perf_counter()
        inp2 = compute_inputs([ens], [TargetSpec(extra="nnn", g=0.01)], comm=comm)
        t_cfg = comm.allreduce(time.perf_counter() - t, op=MPI.MAX)
        assert inp2.sources["links(1,1)"] == "configs"
        t_err = float("nan")
        if comm.rank == 0:
            scalars = {k: v for k, v in inp.primaries.items() if np.ndim(v) == 1}
            reweight(inp.deltas[0][:100], {"m2": scalars["m2"][:100]})  # warm-up (imports)
            t = time.perf_counter()
            reweight(inp.deltas[0], scalars, volume=inp.volume, shape=inp.shape, derived=("chi", "binder", "xi2"))
            t_err = time.perf_counter() - t
        n_s = stats.n_records
        out[L] = {"n_cfg": n, "n_stats": n_s, "stats_cfg_per_s": n_s * len(targets) / t_stats,
                  "configs_cfg_per_s": n / t_cfg, "errors_cfg_per_s": n_s / t_err if comm.rank == 0 else None,
                  "ranks": comm.size,
                  "grid": list(__import__("qftml").Lattice((L, L), comm=comm).grid)}
    if comm.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--dir", default=os.path.join(ROOT, "build", "bench_reweighting"))
    p.add_argument("--out", default=os.path.join(ROOT, "build", "bench_reweighting.json"))
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        return inner(args)
    os.makedirs(args.dir, exist_ok=True)
    for L, n in CASES.items():
        path = os.path.join(args.dir, f"bench_rw_{L}.h5")
        if not os.path.exists(path):
            print(f"writing {path} ({n} random configurations of {L}^2)", flush=True)
            write_file(path, L, n)
        spath = os.path.join(args.dir, f"bench_rw_{L}_stats.h5")
        if not os.path.exists(spath):
            print(f"writing {spath} ({N_STATS} records of observables only)", flush=True)
            write_file(spath, L, N_STATS, seed=1, configs=False)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    results = {}
    for r in args.ranks:
        cmd = [mpiexec, "-n", str(r), sys.executable, os.path.abspath(__file__), "--inner", "--dir", args.dir]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            raise SystemExit(f"benchmark on {r} rank(s) failed")
        results[r] = json.loads(line[len("RESULT "):])
    rows = ["| lattice | ranks | A - S + averages from statistics (cfg/s per point) | "
            "A - S from configurations (cfg/s) | estimator with errors, scalars (cfg/s) |", "|---|---|---|---|---|"]
    for L in CASES:
        for r in args.ranks:
            x = results[r][str(L)]
            rows.append(f"| {L}^2 | {r} | {x['stats_cfg_per_s']:.3g} | {x['configs_cfg_per_s']:.3g} | "
                        f"{x['errors_cfg_per_s']:.3g} |")
    table = "\n".join(rows)
    print(table)
    with open(args.out, "w") as f:
        json.dump({"results": results, "table": table, "load_average": os.getloadavg()}, f, indent=1)
    print(f"load average during the run: {os.getloadavg()}", file=sys.stderr)


if __name__ == "__main__":
    main()
