"""Two builds of the engine against each other: is a change to the kernels slower?

    python benchmarks/compare_builds.py OLD_DIR NEW_DIR [--repeats 7] [--seconds 1.0] [--cases ...]
    python benchmarks/compare_builds.py OLD_DIR NEW_DIR --memory [--shapes 256x256 32x32x32x32 ...]

OLD_DIR and NEW_DIR each hold a built `_core*.so` (e.g. build/cp311-*/ of two checkouts). Each
runs in its own worker process (two extension modules named _core cannot share one); the driver
lets the workers take turns, block after block (ABBA order), on the same lattice, couplings, seed
and step, so both see the same machine state. A block is `n` sweeps timed by process CPU time (on
a machine shared with other jobs, wall time measures the neighbours); `n` is chosen once so that
a block takes about --seconds. Reported per case: ns per site update of each build (medians) and
the ratio new / old, the median over the pairs of neighbouring blocks (< 1: the new build is faster).
With --memory: bytes per local site that constructing the Action, the Field, a Metropolis Sampler
and a Swendsen-Wang Sampler adds to the resident set (a fresh process per build and shape), and
the engine's own accounting (Sampler.memory) where the build has it.

Exports:
    CASES        {name: (shape, algorithm, inhomogeneous, extra)}
    memory_worker(core_dir, shape)   prints the RSS growth (and the accounting) as JSON
    main()
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

CASES = {
    "2d-256-metropolis": ((256, 256), "metropolis", False, []),
    "2d-256-metropolis-inhom": ((256, 256), "metropolis", True, []),
    "2d-2048-metropolis": ((2048, 2048), "metropolis", False, []),
    "2d-256-nnn-metropolis": ((256, 256), "metropolis", False, [[1, 1], [1, -1]]),
    "2d-256-independence": ((256, 256), "independence", False, []),
    "2d-256-ising": ((256, 256), "ising", False, []),
    "4d-16-metropolis": ((16, 16, 16, 16), "metropolis", False, []),
    "4d-32-metropolis-inhom": ((32, 32, 32, 32), "metropolis", True, []),
}


def load_core(core_dir: str):
    """The extension module _core of the build in core_dir (one per process)."""
    import glob
    import importlib.machinery
    import importlib.util

    path = glob.glob(os.path.join(core_dir, "_core*.so"))[0]
    loader = importlib.machinery.ExtensionFileLoader("_core", path)
    spec = importlib.util.spec_from_file_location("_core", path, loader=loader)
    core = importlib.util.module_from_spec(spec)
    loader.exec_module(core)
    return core


def memory_worker(core_dir: str, spec: str) -> None:
    import numpy as np
    from mpi4py import MPI

    core = load_core(core_dir)

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    shape = [int(x) for x in spec.split("x")]
    v, d, n = tuple(shape), len(shape), float(np.prod(shape))
    lat = core.Lattice(shape, MPI.COMM_SELF, [])
    r0 = rss()
    act = core.Action(lat, "real", [], np.ones(v + (d,)), np.zeros(v + (0,)), np.full(v, 1.5), np.full(v, 0.2),
                      np.zeros(v))
    r1 = rss()
    f = core.Field(lat)
    r2 = rss()
    s = core.Sampler(act, f, 1, "metropolis", 1, 1.0, "none", 1)
    r3 = rss()
    sw = core.Sampler(act, f, 1, "metropolis", 1, 1.0, "swendsen-wang", 1)
    r4 = rss()
    out = {"shape": spec, "rss": {"action": (r1 - r0) / n, "field": (r2 - r1) / n, "sampler": (r3 - r2) / n,
                                  "swendsen_wang_sampler": (r4 - r3) / n}}
    if hasattr(s, "memory_bytes"):
        out["accounted"] = {"action": act.bytes / n, "field": f.bytes / n,
                            **{f"sampler_{k}": b / n for k, b in s.memory_bytes().items()},
                            "cluster": sw.cluster_bytes_per_site}
    print(json.dumps(out))


def worker(core_dir: str) -> None:
    """Line protocol on stdin/stdout: 'case NAME' builds the chain, 'run N' times N sweeps."""
    import numpy as np
    from mpi4py import MPI

    core = load_core(core_dir)
    sampler = None
    for line in sys.stdin:
        cmd, arg = line.split()
        if cmd == "case":
            shape, algorithm, inhom, extra = CASES[arg]
            lat = core.Lattice(list(shape), MPI.COMM_SELF, [])
            d, ne = len(shape), len(extra)
            def spread(lo, hi, s):  # inhomogeneous: a smooth deterministic pattern between lo and hi
                if not inhom:
                    return np.full(s, lo)
                return lo + (hi - lo) * 0.5 * (1 + np.sin(0.37 * np.arange(np.prod(s)))).reshape(s)

            field = "ising" if algorithm == "ising" else "real"
            w = spread(0.45, 0.5, shape + (d,)) if field == "ising" else spread(1.0, 1.1, shape + (d,))
            a = spread(1.52425, 1.6, shape) if field == "real" else np.zeros(shape)
            b = spread(0.175, 0.2, shape) if field == "real" else np.zeros(shape)
            act = core.Action(lat, field, extra, w, np.full(shape + (ne,), 0.05), a, b, np.zeros(shape))
            f = core.Field(lat)
            algo = "metropolis" if algorithm == "ising" else algorithm
            try:
                sampler = core.Sampler(act, f, 7, algo, 1, 1.0, "none", 1)
            except ValueError:  # a build from before the rename (ensemble format 1)
                sampler = core.Sampler(act, f, 7, "heatbath" if algo == "independence" else algo, 1, 1.0, "none", 1)
            sampler.randomize()
            sampler.thermalize(5, True, 0.5)
            keep = (lat, act, f)  # noqa: F841  (the sampler refers to them)
            out = {"sites": int(np.prod(shape))}
        else:
            n = int(arg)
            t0 = time.process_time()
            sampler.sweep(n)
            out = {"cpu": time.process_time() - t0}
        print(json.dumps(out), flush=True)


class Worker:
    def __init__(self, core_dir):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", core_dir],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, cmd):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"worker died on {cmd!r}")
        return json.loads(line)

    def close(self):
        self.p.stdin.close()
        self.p.wait()


def compare(case, old, new, repeats, seconds):
    sites = old.ask(f"case {case}")["sites"]
    new.ask(f"case {case}")
    old.ask("run 1"), new.ask("run 1")
    t1 = old.ask("run 2")["cpu"] / 2
    n = max(1, int(seconds / max(t1, 1e-6)))
    ta, tb = [], []
    for r in range(repeats):
        order = (old, new) if r % 2 == 0 else (new, old)  # ABBA
        got = {id(w): w.ask(f"run {n}")["cpu"] for w in order}
        ta.append(got[id(old)])
        tb.append(got[id(new)])
    med = lambda x: sorted(x)[len(x) // 2]  # noqa: E731
    per = 1e9 / (n * sites)
    return {"case": case, "sweeps_per_block": n, "old_ns_per_site": med(ta) * per, "new_ns_per_site": med(tb) * per,
            "ratio_new_over_old": med([b / a for a, b in zip(ta, tb)])}


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        return worker(sys.argv[2])
    if len(sys.argv) > 3 and sys.argv[1] == "--memory-worker":
        return memory_worker(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per block")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--out", help="JSON file for the results")
    ap.add_argument("--memory", action="store_true", help="bytes per site instead of timings")
    ap.add_argument("--shapes", nargs="*", default=["256x256", "2048x2048", "16x16x16x16", "32x32x32x32"])
    args = ap.parse_args()
    if args.memory:
        for shape in args.shapes:
            for label, build in (("old", args.old), ("new", args.new)):
                r = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-worker", build, shape],
                                   capture_output=True, text=True, check=True)
                got = json.loads(r.stdout.strip().splitlines()[-1])
                print(label, json.dumps({k: ({q: round(x, 1) for q, x in v.items()} if isinstance(v, dict) else v)
                                         for k, v in got.items()}), flush=True)
        return
    old, new = Worker(args.old), Worker(args.new)
    results = []
    try:
        for case in args.cases:
            r = compare(case, old, new, args.repeats, args.seconds)
            results.append(r)
            print(f"{case:26s} old {r['old_ns_per_site']:7.2f} ns/site  new {r['new_ns_per_site']:7.2f} ns/site  "
                  f"new/old {r['ratio_new_over_old']:.3f}", flush=True)
    finally:
        old.close()
        new.close()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"load_average": os.getloadavg(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
