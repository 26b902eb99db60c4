"""Cost of one upscaled configuration vs one independent Metropolis configuration (docs/irg.md).

    python benchmarks/bench_irg.py [--sizes 64 128 ...] [--tau-sweeps 40000]
    mpiexec -n 2 python benchmarks/bench_irg.py

Upscaled: seconds for the whole chain 32 -> ... -> L of one configuration (b = 2, filter 6x6 with
noise, observables measured at every level by the engine), per configuration, on all ranks; the
lattices and measurement fields of the levels are made once, as in qftml.rg.pipeline.
Metropolis: seconds per sweep at L (3 hits, the example's settings) times tau_int(|m|) in sweeps;
tau_int is measured at L = 16 and 32 at mu2 = -0.92 (pyerrors Gamma method) and extrapolated as
tau(L) = tau(32) (L / 32)^z with the measured z from 16 -> 32 (and, for reference, the 2D Ising
Metropolis value z = 2.17). Standalone: writes nothing, prints a Markdown table.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

import qftml
from qftml.rg.inverse import ConfigurationMeasure, InverseRG, fine_lattice
from qftml.stats.errors import tau_int

MU2, LAM = -0.92, 0.7


def sweep_seconds(L, comm, n=20):
    lat = qftml.Lattice((L, L), comm=comm)
    s = qftml.Sampler(qftml.Action.homogeneous(lat, 1.0, MU2, LAM), seed=1, hits=3)
    s.sweep(2)
    comm.Barrier()
    t = time.perf_counter()
    s.sweep(n)
    comm.Barrier()
    return (time.perf_counter() - t) / n


def measured_tau(L, sweeps, comm, every=10):
    lat = qftml.Lattice((L, L), comm=comm)
    s = qftml.Sampler(qftml.Action.homogeneous(lat, 1.0, MU2, LAM), seed=2, hits=3)
    s.thermalize(5000)
    m = []
    for _ in range(sweeps // every):
        s.sweep(every)
        m.append(s.measure()["abs_m"])
    tau, dtau = tau_int(np.array(m))
    return tau * every, dtau * every


def upscale_seconds(L_target, comm, n_cfg=2):
    lat = qftml.Lattice((32, 32), comm=comm)
    model = InverseRG(b=2, size=6, noise=True)
    model.f[0] = np.random.default_rng(0).normal(0.25, 0.05, (6, 6))
    model.sigma = 0.4
    x = np.random.default_rng(1).normal(size=(1,) + lat.local_shape)
    lats = [lat]
    while lats[-1].shape[0] < L_target:
        lats.append(fine_lattice(lats[-1], 2))
    measures = [ConfigurationMeasure(fine) for fine in lats[1:]]
    comm.Barrier()
    t = time.perf_counter()
    for c in range(n_cfg):
        cur = x
        for coarse, fine, measure in zip(lats, lats[1:], measures):
            _, cur = model.upscale(coarse, cur, seed=3, first_config=c, level=coarse.shape[0], fine=fine)
            measure(cur[0])
    comm.Barrier()
    return (time.perf_counter() - t) / n_cfg


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096])
    p.add_argument("--tau-sweeps", type=int, default=40000)
    a = p.parse_args()
    comm = MPI.COMM_WORLD
    tau16, dtau16 = measured_tau(16, a.tau_sweeps, comm)
    tau32, dtau32 = measured_tau(32, a.tau_sweeps, comm)
    z = np.log(tau32 / tau16) / np.log(2.0)
    rows = []
    for L in a.sizes:
        t_up = upscale_seconds(L, comm, n_cfg=1 if L >= 2048 else 2)
        t_sw = sweep_seconds(L, comm, n=2 if L >= 2048 else 10)
        tau_z, tau_ising = tau32 * (L / 32) ** z, tau32 * (L / 32) ** 2.17
        rows.append((L, t_up, t_sw, tau_z, t_sw * tau_z, tau_ising, t_sw * tau_ising))
    if comm.rank == 0:
        print(f"ranks: {comm.size}; tau_int(|m|) in sweeps: L=16 {tau16:.1f}+-{dtau16:.1f}, "
              f"L=32 {tau32:.1f}+-{dtau32:.1f}; measured z = {z:.2f}")
        print("| L | upscaled config (s) | Metropolis sweep (s) | tau_int (z measured) | independent config (s) "
              "| tau_int (z = 2.17) | independent config (s) | speed-up (z = 2.17) |")
        print("|---|---|---|---|---|---|---|---|")
        for L, t_up, t_sw, tz, cz, ti, ci in rows:
            print(f"| {L} | {t_up:.3g} | {t_sw:.3g} | {tz:.3g} | {cz:.3g} | {ti:.3g} | {ci:.3g} | {ci / t_up:.3g} |")


if __name__ == "__main__":
    main()
