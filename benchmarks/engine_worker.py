"""Engine side of `make bench`: site updates per second per core of one-hit Metropolis.

Exports:
    couplings_block(shape, slices, inhomogeneous) -> (w, a, b, r)   the benchmark couplings
    measure_case(shape, inhomogeneous, comm, ...) -> dict            one timed case
    main()   `python engine_worker.py --mode single|mpi --out FILE` (under mpiexec for "mpi")

Couplings: the seed's homogeneous theory (w = 1, a = 1.52425, b = 0.175, r = 0), or an
inhomogeneous one of the same size, w = 1 + 0.1 sin(.), a, b, r varying by a few percent,
a smooth function of the global coordinates so that every rank builds its own block and the
references build the same global arrays. The Metropolis step is tuned to ~50% acceptance in
thermalisation, then frozen; the references are run with the step found here.

Timing: median over `repeats` blocks of `sweeps` sweeps; wall clock (MPI.Wtime, barriers
around each block) and process CPU time (robust on a shared machine). With reference=True every
engine block is followed by a block of the numba reference (reference_numba.py) on each rank's
own local block, with the same couplings and step: the two codes alternate on the same cores
under the same load (on 2 ranks both cores are busy for both), and the ratio engine / numba is
taken per pair of neighbouring blocks, then the median over pairs. On a shared machine whose
speed drifts by tens of percent within minutes this is the comparison that means something. Timers of the sampler
(update / halo_wait / halo_pack seconds) and a stand-alone blocking halo exchange give how much
of the exchange is hidden behind interior updates: hidden = 1 - halo_wait / t_exchange.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import qftml  # noqa: E402

A0, B0 = 1.52425, 0.175


def couplings_block(shape, slices, inhomogeneous: bool):
    """(w, a, b, r) on the block `slices` of the global lattice `shape` (scalars if homogeneous)."""
    if not inhomogeneous:
        return 1.0, A0, B0, 0.0
    x0, x1 = np.meshgrid(np.arange(shape[0])[slices[0]], np.arange(shape[1])[slices[1]], indexing="ij")
    phase = 0.37 * x0 + 0.71 * x1
    w = np.stack([1.0 + 0.1 * np.sin(phase), 1.0 + 0.1 * np.cos(1.3 * phase)], axis=-1)
    a = A0 * (1.0 + 0.05 * np.cos(0.9 * phase))
    b = B0 * (1.0 + 0.1 * np.sin(1.7 * phase))
    r = 0.02 * np.sin(0.5 * phase)
    return w, a, b, r


def local_reference(shape, lat, inhomogeneous, step, seed):
    """The numba reference on this rank's local block (periodic), the engine's couplings there."""
    from reference_numba import NumbaMetropolis

    local = tuple(lat.local_shape)
    w, a, b, r = couplings_block(shape, lat.local_slices, inhomogeneous)
    w, a, b, r = (np.broadcast_to(np.asarray(x, dtype=float), local + ((2,) if i == 0 else ())).copy()
                  for i, x in enumerate((w, a, b, r)))
    return NumbaMetropolis(w, a, b, r, step, seed=seed)


def measure_case(shape, inhomogeneous, comm, grid=None, repeats=5, sweeps=None, tune_sweeps=None, seed=1,
                 reference=False):
    lat = qftml.Lattice(shape, comm=comm, grid=grid)
    w, a, b, r = couplings_block(shape, lat.local_slices, inhomogeneous)
    act = qftml.Action(lat, w, a, b, r)
    s = qftml.Sampler(act, seed=seed, algorithm="metropolis", hits=1, step=1.6)
    local_volume = int(np.prod(lat.local_shape))
    if sweeps is None:  # ~0.1-0.3 s per timed block at ~100 M updates/s per core; at least 4, as
        sweeps = max(4, int(2e7 // local_volume))  # between measurements (sweep(n) pipelines 2D sweeps)
    if tune_sweeps is None:
        tune_sweeps = max(3, min(30, int(2e7 // local_volume)))
    s.thermalize(tune_sweeps, tune=True)
    s.sweep(1)  # warm caches after tuning
    s.reset_counters()
    s._core.reset_timers()
    ref = local_reference(shape, lat, inhomogeneous, s.step, seed=seed + comm.rank) if reference else None
    ref_sweeps = max(1, int(5e6 // local_volume))  # ~0.2-0.3 s at ~20 M updates/s
    walls, cpus, ref_walls, ref_cpus, ref_accepted = [], [], [], [], 0
    for _ in range(repeats):
        comm.Barrier()
        t0, c0 = MPI.Wtime(), time.process_time()
        s.sweep(sweeps)
        c1 = time.process_time()
        comm.Barrier()
        walls.append(MPI.Wtime() - t0)
        cpus.append(comm.allreduce(c1 - c0, op=MPI.SUM))
        if ref is not None:  # every rank runs its own reference at the same time: both cores busy
            comm.Barrier()
            t0, c0 = MPI.Wtime(), time.process_time()
            ref_accepted += ref.sweep(ref_sweeps)
            c1 = time.process_time()
            comm.Barrier()
            ref_walls.append(MPI.Wtime() - t0)
            ref_cpus.append(comm.allreduce(c1 - c0, op=MPI.SUM))
    timers = s.timers()
    timers = {k: comm.allreduce(v, op=MPI.MAX) / (repeats * sweeps) for k, v in timers.items()}
    acceptance = s.acceptance()
    # Stand-alone blocking exchange of both parities: what one sweep's halo traffic costs exposed.
    exch = []
    for _ in range(max(5, 3 * repeats)):
        comm.Barrier()
        t0 = MPI.Wtime()
        s.field.exchange_halos()
        exch.append(comm.allreduce(MPI.Wtime() - t0, op=MPI.MAX))
    t_exchange = float(np.median(exch))
    updates = float(np.prod(shape)) * sweeps
    size = comm.Get_size()
    wall = float(np.median(walls))
    cpu = float(np.median(cpus))
    out = {
        "shape": list(shape), "inhomogeneous": bool(inhomogeneous), "ranks": size, "grid": list(lat.grid),
        "local_shape": list(lat.local_shape), "sweeps_per_block": sweeps, "repeats": repeats,
        "step": s.step, "acceptance": acceptance,
        "updates_per_s_per_core": updates / wall / size,
        "updates_per_s_per_core_cpu": updates / cpu,
        "wall_s_blocks": walls,
        "timers_s_per_sweep": timers,
        "exchange_s_standalone": t_exchange,
        # Clipped at 0: a wait longer than a whole blocking exchange means the ranks were out of step.
        "halo_hidden_fraction": (max(0.0, 1.0 - timers["halo_wait"] / t_exchange)
                                 if (size > 1 and t_exchange > 0) else None),
    }
    if ref is not None:
        ref_updates = float(local_volume) * ref_sweeps * size  # summed over ranks, like `updates`
        eng_cpu = updates / np.array(cpus)
        eng_wall = updates / np.array(walls) / size
        num_cpu = ref_updates / np.array(ref_cpus)
        num_wall = ref_updates / np.array(ref_walls) / size
        out["numba_interleaved"] = {
            "reference": "numba (reference_numba.py, PCG64 uniforms in bulk), each rank on its local block",
            "sweeps_per_block": ref_sweeps,
            "acceptance": comm.allreduce(ref_accepted) / (ref_updates * repeats),
            "updates_per_s_per_core": float(np.median(num_wall)),
            "updates_per_s_per_core_cpu": float(np.median(num_cpu)),
            "ratio_pairs_cpu": (eng_cpu / num_cpu).tolist(),
            "ratio_pairs_wall": (eng_wall / num_wall).tolist(),
            "ratio_median_cpu": float(np.median(eng_cpu / num_cpu)),
            "ratio_median_wall": float(np.median(eng_wall / num_wall)),
        }
    return out


CASES_SINGLE = [((256, 256), False), ((256, 256), True), ((4096, 4096), False), ((4096, 4096), True)]


def cases_mpi(size):
    # Same global lattice on 2 ranks (per-core rate) and weak scaling (each rank as big as 1 rank).
    strong = [((256, 256), inh, "same-volume") for inh in (False, True)] + \
             [((4096, 4096), inh, "same-volume") for inh in (False, True)]
    weak = [((256 * size, 256), inh, "weak") for inh in (False, True)] + \
           [((4096 * size, 4096), inh, "weak") for inh in (False, True)]
    return strong + weak


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["single", "mpi"], default="single")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="small lattices only (smoke test)")
    args = ap.parse_args()
    comm = MPI.COMM_WORLD
    results = []
    if args.mode == "single":
        cases = [(sh, inh, "single") for sh, inh in CASES_SINGLE]
    else:
        cases = cases_mpi(comm.Get_size())
    if args.quick:
        cases = [c for c in cases if max(c[0]) <= 512]
    for shape, inh, kind in cases:
        grid = (comm.Get_size(), 1) if kind != "single" else None
        res = measure_case(shape, inh, comm, grid=grid, repeats=args.repeats, reference=(kind != "weak"))
        res["kind"] = kind
        results.append(res)
        if comm.Get_rank() == 0:
            ref = res.get("numba_interleaved")
            print(f"  engine {kind:11s} {res['ranks']} rank(s) {shape[0]}x{shape[1]} "
                  f"{'inhom' if inh else 'homog'}: {res['updates_per_s_per_core'] / 1e6:7.1f} M/s/core wall, "
                  f"{res['updates_per_s_per_core_cpu'] / 1e6:7.1f} cpu, acceptance {res['acceptance']:.3f}"
                  + (f" | numba alternating {ref['updates_per_s_per_core_cpu'] / 1e6:5.1f} cpu, ratio per pair "
                     f"{ref['ratio_median_cpu']:.1f} (median; {min(ref['ratio_pairs_cpu']):.1f}-"
                     f"{max(ref['ratio_pairs_cpu']):.1f})" if ref else ""),
                  flush=True)
    if comm.Get_rank() == 0:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
