"""`make bench`: the engine's Metropolis throughput against NumPy and numba references.

Exports:
    main()   runs everything below and writes bench-results/engine.json

Steps (all in one run, so every number comes from the same machine state):
  1. kernel_check.cpp: the AVX-512 kernels against the portable ones, bit for bit (compiled with
     the engine's flags; skipped with a message if no C++ compiler is found).
  2. stream_triad.py: one core's memory bandwidth (the roofline of docs/performance.md).
  3. engine_worker.py on 1 rank: one-hit Metropolis at 256^2 (in cache) and 4096^2 (out of
     cache), homogeneous and inhomogeneous couplings, step tuned to ~50% acceptance; blocks of the
     engine alternate with blocks of the numba reference (same couplings and step, same process),
     and the ratio engine / numba is the median over neighbouring pairs of blocks.
  4. the references alone, one after the other (same couplings and step): reference_numba.py
     (NumPy's PCG64 uniforms in bulk + jitted sweep; and numba's own inline generator) and
     reference_numpy.py.
  5. engine_worker.py under `mpiexec -n 2`: the same lattices on 2 ranks (per-core rate; the
     alternating numba blocks run on both ranks at once, each on its rank's block, so both codes
     see two busy cores), weak scaling (2L x L on 2 ranks against L x L on 1), halo timers.
  6. every benchmarks/bench_*.py of the other areas (bench_fit.py: `qftml fit` epochs at 64^2 with
     10^4 data configurations), each as a standalone script (bench_cluster.py:
     critical slowing down, cluster updates against a numba Wolff reference, ~30 min).
Rates are site updates per second per core, medians over repeats, by wall clock and by process
CPU time (the second is what to compare on a machine shared with other jobs; the load average
is recorded). "x numba" is the median of the alternating pairs (step 3/5); "x numba alone"
divides by the faster numba variant of step 4, measured minutes apart (kept for comparison).
Options: --quick (256^2 only), --skip-mpi, --skip-others, --repeats N, --other-timeout S.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS threads would steal the second core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from engine_worker import couplings_block  # noqa: E402
from reference_numba import NumbaMetropolis  # noqa: E402
from reference_numpy import NumpyMetropolis  # noqa: E402
from stream_triad import triad_bandwidth  # noqa: E402

# The engine's compile flags (CMakeLists.txt, QFTML_NATIVE=ON): the check must see the same code.
ENGINE_FLAGS = ["-std=c++17", "-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp-simd",
                "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno"]


def log(msg=""):
    print(msg, flush=True)


def machine_info():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "host": platform.node(), "cpu": cpu,
            "cores": os.cpu_count(), "load_average": os.getloadavg(), "git_commit": commit}


def kernel_check():
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        return {"status": "skipped", "why": "no C++ compiler found (set CXX)"}
    exe = os.path.join(ROOT, "bench-results", "kernel_check")
    cmd = [cxx, *ENGINE_FLAGS, "-I", os.path.join(ROOT, "cpp"), os.path.join(HERE, "kernel_check.cpp"), "-o", exe]
    comp = subprocess.run(cmd, capture_output=True, text=True)
    if comp.returncode != 0:
        return {"status": "compile-failed", "why": comp.stderr[-2000:]}
    run = subprocess.run([exe], capture_output=True, text=True)
    return {"status": "pass" if run.returncode == 0 else "FAIL", "output": run.stdout.strip()}


def script_timeout(script, default):
    """A script may ask for more time than --other-timeout with a line '# bench-timeout: SECONDS'
    near its top (the long chains of bench_cluster.py)."""
    with open(script) as f:
        for line in f.readlines()[:20]:
            if line.strip().startswith("# bench-timeout:"):
                return max(default, float(line.split(":", 1)[1]))
    return default


def time_blocks(fn, repeats):
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - c0)
        walls.append(time.perf_counter() - t0)
    return float(np.median(walls)), float(np.median(cpus))


def run_reference(kind, shape, inhomogeneous, step, repeats):
    full = tuple(slice(0, n) for n in shape)
    w, a, b, r = couplings_block(shape, full, inhomogeneous)
    w, a, b, r = (np.broadcast_to(np.asarray(x, dtype=float), shape + ((2,) if i == 0 else ())).copy()
                  for i, x in enumerate((w, a, b, r)))
    volume = shape[0] * shape[1]
    if kind == "numpy":
        ref = NumpyMetropolis(w, a, b, r, step, seed=1)
        rate_guess = 4e6
    else:
        ref = NumbaMetropolis(w, a, b, r, step, seed=1, inline_rng=(kind == "numba-inline-rng"))
        rate_guess = 1.5e7
    ref.sweep(1)
    sweeps = max(1, int(0.3 * rate_guess // volume))
    counts = []
    wall, cpu = time_blocks(lambda: counts.append(ref.sweep(sweeps)), repeats)
    return {"reference": kind, "shape": list(shape), "inhomogeneous": inhomogeneous, "step": step,
            "sweeps_per_block": sweeps, "repeats": repeats,
            "acceptance": float(np.sum(counts)) / (volume * sweeps * len(counts)),
            "updates_per_s": volume * sweeps / wall, "updates_per_s_cpu": volume * sweeps / cpu}


def run_worker(mode, out, repeats, quick, n_ranks=1, timeout=900):
    py = sys.executable
    cmd = [py, os.path.join(HERE, "engine_worker.py"), "--mode", mode, "--out", out, "--repeats", str(repeats)]
    if quick:
        cmd.append("--quick")
    if n_ranks > 1:
        mpiexec = os.path.join(os.path.dirname(py), "mpiexec")
        mpiexec = mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec")
        cmd = [mpiexec, "-n", str(n_ranks), *cmd]
    subprocess.run(cmd, check=True, timeout=timeout)
    with open(out) as f:
        return json.load(f)


def label(shape, inh):
    return f"{shape[0]}x{shape[1]} {'inhom' if inh else 'homog'}"


def main():
    ap = argparse.ArgumentParser(description="qftml engine benchmark (make bench)")
    ap.add_argument("--quick", action="store_true", help="256^2 only")
    ap.add_argument("--skip-mpi", action="store_true")
    ap.add_argument("--skip-others", action="store_true", help="do not run benchmarks/bench_*.py")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--other-timeout", type=float, default=300.0, help="seconds per benchmarks/bench_*.py")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results", "engine.json"))
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    t_start = time.time()
    results = {"machine": machine_info(), "command": "make bench  (.venv/bin/python benchmarks/run.py)"}
    m = results["machine"]
    log(f"qftml engine benchmark  {m['date_utc']} UTC  {m['cpu']}  {m['cores']} cores  "
        f"load {m['load_average'][0]:.2f}  commit {m['git_commit']}")

    log("\n[1] kernel check (AVX-512 vs portable kernels, bitwise)")
    results["kernel_check"] = kernel_check()
    kc = results["kernel_check"]
    log("  " + kc["status"] + ": " + kc.get("output", kc.get("why", "")))

    log("\n[2] stream triad, one core")
    results["stream_triad_1core"] = triad_bandwidth()
    st = results["stream_triad_1core"]
    log(f"  {st['GB_per_s_stream']:.1f} GB/s wall clock, {st['GB_per_s_stream_cpu']:.1f} GB/s per CPU second "
        f"(24 bytes per element)")

    tmp = os.path.join(os.path.dirname(args.out), "engine_worker_{}.json")
    log("\n[3] engine, 1 rank")
    engine1 = run_worker("single", tmp.format("single"), args.repeats, args.quick)
    results["engine_1rank"] = engine1

    log("\n[4] references (same couplings, same step)")
    refs = []
    for e in engine1:
        shape, inh = tuple(e["shape"]), e["inhomogeneous"]
        # numba's inline generator is the slower numba variant everywhere we tried: in cache only.
        kinds = ("numba", "numba-inline-rng", "numpy") if shape[0] * shape[1] <= 1 << 20 else ("numba", "numpy")
        for kind in kinds:
            reps = args.repeats if shape[0] * shape[1] <= 1 << 20 else max(3, args.repeats // 2)
            ref = run_reference(kind, shape, inh, e["step"], reps)
            refs.append(ref)
            log(f"  {kind:17s} {label(shape, inh)}: {ref['updates_per_s'] / 1e6:7.2f} M/s wall, "
                f"{ref['updates_per_s_cpu'] / 1e6:7.2f} cpu, acceptance {ref['acceptance']:.3f}")
    results["references"] = refs

    engine2 = []
    if not args.skip_mpi:
        log("\n[5] engine, 2 ranks (mpiexec -n 2): same lattices, then weak scaling")
        try:
            engine2 = run_worker("mpi", tmp.format("mpi"), args.repeats, args.quick, n_ranks=2)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            log(f"  2-rank run failed: {err}")
    results["engine_2ranks"] = engine2

    # Table: engine per core vs the faster numba variant and numpy, by wall clock and CPU time.
    def ref_rate(shape, inh, kinds, key):
        return max(r[key] for r in refs if tuple(r["shape"]) == tuple(shape) and r["inhomogeneous"] == inh
                   and r["reference"] in kinds)

    table = []
    for e in engine1 + [e for e in engine2 if e["kind"] == "same-volume"]:
        shape, inh = e["shape"], e["inhomogeneous"]
        row = {"case": label(shape, inh), "ranks": e["ranks"], "acceptance": e["acceptance"],
               "engine_M_per_s_per_core": e["updates_per_s_per_core"] / 1e6,
               "engine_M_per_s_per_core_cpu": e["updates_per_s_per_core_cpu"] / 1e6}
        ni = e.get("numba_interleaved")
        for clock, ek, rk in (("wall", "updates_per_s_per_core", "updates_per_s"),
                              ("cpu", "updates_per_s_per_core_cpu", "updates_per_s_cpu")):
            numba_best = ref_rate(shape, inh, ("numba", "numba-inline-rng"), rk)
            numpy_rate = ref_rate(shape, inh, ("numpy",), rk)
            row[f"numba_alone_M_per_s_{clock}"] = numba_best / 1e6
            row[f"ratio_vs_numba_alone_{clock}"] = e[ek] / numba_best
            row[f"numpy_M_per_s_{clock}"] = numpy_rate / 1e6
            row[f"ratio_vs_numpy_{clock}"] = e[ek] / numpy_rate
            row[f"numba_M_per_s_{clock}"] = ni[ek] / 1e6
            row[f"ratio_vs_numba_{clock}"] = ni[f"ratio_median_{clock}"]
            row[f"ratio_vs_numba_range_{clock}"] = [min(ni[f"ratio_pairs_{clock}"]), max(ni[f"ratio_pairs_{clock}"])]
        table.append(row)
    results["table"] = table

    weak = []
    for e2 in (e for e in engine2 if e["kind"] == "weak"):
        base = next((e for e in engine1 if e["shape"] == e2["local_shape"]
                     and e["inhomogeneous"] == e2["inhomogeneous"]), None)
        if base is None:
            continue
        t = e2["timers_s_per_sweep"]
        weak.append({"case": f"{label(e2['shape'], e2['inhomogeneous'])} on 2 ranks vs "
                             f"{label(base['shape'], base['inhomogeneous'])} on 1",
                     "efficiency_wall": e2["updates_per_s_per_core"] / base["updates_per_s_per_core"],
                     "efficiency_cpu": e2["updates_per_s_per_core_cpu"] / base["updates_per_s_per_core_cpu"],
                     "update_s_per_sweep": t["update"], "halo_wait_s_per_sweep": t["halo_wait"],
                     "halo_pack_s_per_sweep": t["halo_pack"], "exchange_s_standalone": e2["exchange_s_standalone"],
                     "halo_hidden_fraction": e2["halo_hidden_fraction"]})
    results["weak_scaling"] = weak

    log("\n== site updates per second per core (M/s); ratio = engine / reference ==")
    log("(cpu clock; 'numba' and 'x numba': alternating blocks, median of pair ratios [range]; "
        "'alone': the references run separately)")
    log(f"{'case':20s} {'ranks':>5s} {'acc':>5s} | {'engine':>7s} {'numba':>6s} {'x numba':>7s} {'[range]':>11s}"
        f" | {'alone':>6s} {'x alone':>7s} | {'numpy':>6s} {'x numpy':>7s} | wall: {'x numba':>7s}")
    for row in table:
        lo, hi = row["ratio_vs_numba_range_cpu"]
        log(f"{row['case']:20s} {row['ranks']:5d} {row['acceptance']:5.2f} | {row['engine_M_per_s_per_core_cpu']:7.1f} "
            f"{row['numba_M_per_s_cpu']:6.1f} {row['ratio_vs_numba_cpu']:7.1f} {f'[{lo:.1f}-{hi:.1f}]':>11s} | "
            f"{row['numba_alone_M_per_s_cpu']:6.1f} {row['ratio_vs_numba_alone_cpu']:7.1f} | "
            f"{row['numpy_M_per_s_cpu']:6.1f} {row['ratio_vs_numpy_cpu']:7.1f} | "
            f"wall: {row['ratio_vs_numba_wall']:7.1f}")
    if weak:
        log("\n== weak scaling (2 ranks, each rank's block as large as the 1-rank lattice) ==")
        for w in weak:
            hid = w["halo_hidden_fraction"]
            log(f"{w['case']}: efficiency {w['efficiency_wall']:.2f} wall, {w['efficiency_cpu']:.2f} cpu; per sweep "
                f"update {w['update_s_per_sweep'] * 1e3:.2f} ms, halo wait {w['halo_wait_s_per_sweep'] * 1e3:.3f} ms, "
                f"pack {w['halo_pack_s_per_sweep'] * 1e3:.3f} ms, "
                f"blocking exchange {w['exchange_s_standalone'] * 1e3:.3f} ms"
                + (f", hidden {100 * hid:.0f}%" if hid is not None else "")
                + (" (waits longer than a blocking exchange: ranks out of step, e.g. a loaded machine)"
                   if hid is not None and hid <= 0 else ""))
    results["machine"]["load_average_end"] = os.getloadavg()
    results["seconds"] = time.time() - t_start
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    log(f"\nwrote {os.path.relpath(args.out, ROOT)}  ({results['seconds']:.0f} s; load average now "
        f"{results['machine']['load_average_end'][0]:.2f})")

    status = 0 if results["kernel_check"]["status"] in ("pass", "skipped") else 1
    if not args.skip_others:
        others = sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
        for script in others:
            log(f"\n[6] {os.path.relpath(script, ROOT)}")
            timeout = script_timeout(script, args.other_timeout)
            try:
                rc = subprocess.run([sys.executable, script], cwd=ROOT, timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                rc = f"timeout after {timeout:.0f} s (--other-timeout, or the script's bench-timeout line)"
            if rc != 0:
                log(f"  {os.path.basename(script)} failed: {rc}")
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
