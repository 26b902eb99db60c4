# bench-timeout: 7200   (benchmarks/run.py: this script's long chains need more than --other-timeout)
"""Critical slowing down: tau_int and the CPU cost of one independent configuration at the seed's
critical point (kappa = 1, lam = 0.7, mu2 = -0.9515), qftml against a numba Wolff reference.

    python benchmarks/bench_cluster.py [--quick] [--scale 0.5] [--sizes 32 64 ...] [--out bench-results/cluster.json]
    (make bench runs it; it starts its own 2-rank weak-scaling run under mpiexec)

Steps:
  1. scan at L = 64 (and 256 unless --quick): qftml's local updates (Metropolis with 1-4 hits, the
     independence sampler) with Swendsen-Wang every 1, 2 or 3 sweeps, and Wolff; the reference
     (reference_wolff_numba.py) with 1-3 Metropolis hits and clusters per sweep covering 0.5, 1 or
     2 V. All chains run round robin in blocks (the same machine state for all); the cheapest
     setting of each code at the largest scan size is used for the size series.
  2. sizes L = 32 ... 512: qftml's cheapest scan setting (two seeds: ergodicity) and the
     reference's, alternating block by block; local Metropolis alone at L = 16 ... 128.
  3. weak scaling of the cluster update: 2048 x 1024 sites per rank, 2 ranks on 4096 x 1024 against
     each rank alone on 2048 x 1024 at the same time (both cores busy in both phases).
Per chain: tau_int of |m|, m^2 and E = -(1/V) sum_<xy> phi_x phi_y (Gamma method, qftml.stats.errors),
sign changes of m, CPU seconds per sweep (process time of the sweep calls only, median over
blocks), the cost of one independent configuration 2 tau_int(|m|) x CPU/sweep, and for qftml the
CPU split into local update, bonds, labels, cross-rank merge and flips (the sampler's timers).
The cost ratio reference / qftml is the tau ratio times the median over block pairs of the CPU
ratio; z from a weighted fit of log tau against log L (L >= 32 for the clusters, >= 16 local).
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

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import qftml  # noqa: E402
from qftml.stats.errors import mean_error, tau_int  # noqa: E402
from reference_wolff_numba import NumbaWolff, clusters_for_coverage  # noqa: E402

KAPPA, LAM, MU2 = 1.0, 0.7, -0.9515
A0, B0 = 0.5 * (MU2 + 4 * KAPPA), LAM / 4
INDEPENDENCE = "independence"  # the single-site independence sampler (named "heatbath" before format 2)


def log(msg=""):
    print(msg, flush=True)


class QftmlChain:
    def __init__(self, L, algorithm="metropolis", hits=1, cluster="swendsen-wang", every=1, seed=1, comm=None):
        self.name = f"qftml {algorithm} x{hits}" + (f" + {cluster}/{every}" if cluster != "none" else "")
        self.config = {"code": "qftml", "algorithm": algorithm, "hits": hits, "cluster": cluster,
                       "cluster_every": every, "seed": seed}
        lat = qftml.Lattice((L, L), MPI.COMM_SELF if comm is None else comm)
        self.V = lat.volume
        self.s = qftml.Sampler(qftml.Action.homogeneous(lat, KAPPA, MU2, LAM), seed=seed, algorithm=algorithm,
                               hits=hits, cluster=cluster, cluster_every=every)
        self.series = {"m": [], "E": []}
        self.block_cpu = []

    def thermalize(self, n):
        self.s.thermalize(n)
        self.s.reset_counters()
        self.s._core.reset_timers()

    def block(self, n, measure_every=1):
        cpu = 0.0
        for _ in range(n // measure_every):
            c0 = time.process_time()
            self.s.sweep(measure_every)
            cpu += time.process_time() - c0
            o = self.s.measure()
            self.series["m"].append(o["m"])
            self.series["E"].append(-o["sum_links_nn"] / self.V)
        self.block_cpu.append(cpu / n)

    def extras(self):
        out = {"acceptance": self.s.acceptance(), "step": self.s.step}
        if self.config["cluster"] != "none":
            t = self.s.timers()
            sweeps = len(self.series["m"]) * self.measure_every
            total = float(np.sum(self.block_cpu)) * sweeps / len(self.block_cpu)
            split = {k: t[f"cluster_{k}"] / sweeps for k in ("bonds", "labels", "merge", "flips")}
            split["local"] = total / sweeps - sum(split.values())
            out.update(cluster_stats=self.s.cluster_stats(), cpu_split_s_per_sweep=split,
                       cluster_bytes_per_site=self.s.cluster_bytes_per_site)
        return out


class ReferenceChain:
    def __init__(self, L, hits=1, coverage=1.0, step=1.0, seed=1):
        self.name = f"numba Metropolis x{hits} + Wolff covering {coverage:g} V"
        shape = (L, L)
        w, a, b, r = np.full(shape + (2,), KAPPA), np.full(shape, A0), np.full(shape, B0), np.zeros(shape)
        self.ref = NumbaWolff(w, a, b, r, step, seed=seed, hits=hits, clusters=4)
        self.ref.sweep(200)  # thermalise before the pilot that fixes the number of clusters
        self.ref.clusters = clusters_for_coverage(self.ref, coverage, sweeps=200)
        self.config = {"code": "numba", "hits": hits, "coverage": coverage, "clusters_per_sweep": self.ref.clusters,
                       "step": step, "seed": seed}
        self.V = L * L
        self.series = {"m": [], "E": []}
        self.block_cpu = []
        self.covered = 0

    def thermalize(self, n):
        self.ref.sweep(n)

    def block(self, n, measure_every=1):
        cpu = 0.0
        for _ in range(n):
            c0 = time.process_time()
            _, covered = self.ref.sweep(1)
            cpu += time.process_time() - c0
            self.covered += covered
            phi = self.ref.phi
            self.series["m"].append(float(phi.mean()))
            links = np.sum(phi * np.roll(phi, -1, 0)) + np.sum(phi * np.roll(phi, -1, 1))
            self.series["E"].append(-float(links) / self.V)
        self.block_cpu.append(cpu / n)

    def extras(self):
        return {"mean_cluster_size": self.covered / (len(self.series["m"]) * self.ref.clusters)}


def summarize(chain, every=1):
    m = np.asarray(chain.series["m"])
    out = {"name": chain.name, "L": int(round(np.sqrt(chain.V))), "config": chain.config,
           "sweeps": len(m) * every, "measure_every": every}
    for key, x in (("abs_m", np.abs(m)), ("m2", m * m), ("E", np.asarray(chain.series["E"]))):
        tau, dtau = tau_int(x)
        mean, err = mean_error(x, key)
        out[key] = {"mean": mean, "error": err, "tau_int": tau * every, "tau_int_error": dtau * every}
    out["m_mean"] = mean_error(m, "m")
    out["sign_changes"] = int(np.sum(np.diff(np.sign(m)) != 0))
    out["cpu_s_per_sweep"] = float(np.median(chain.block_cpu))
    out["cost_s"] = 2 * out["abs_m"]["tau_int"] * out["cpu_s_per_sweep"]
    out["cost_s_error"] = 2 * out["abs_m"]["tau_int_error"] * out["cpu_s_per_sweep"]
    chain.measure_every = every
    out.update(chain.extras())
    return out


def round_robin(chains, sweeps, block, every=1):
    for c in chains:
        c.block(min(block, sweeps), every)  # warm-up block (compiles, fills caches): discarded
        c.series = {"m": [], "E": []}
        c.block_cpu = []
    for _ in range(max(1, sweeps // block)):
        for c in chains:
            c.block(block, every)


def pair_ratio(ref, q):
    """Median over neighbouring blocks of CPU/sweep (reference) / CPU/sweep (qftml)."""
    r = np.asarray(ref.block_cpu) / np.asarray(q.block_cpu)
    return float(np.median(r)), [float(r.min()), float(r.max())]


def scan(L, sweeps, block, step):
    q_cfgs = [("metropolis", 1, "swendsen-wang", 1), ("metropolis", 2, "swendsen-wang", 1),
              ("metropolis", 3, "swendsen-wang", 1), ("metropolis", 4, "swendsen-wang", 1),
              ("metropolis", 2, "swendsen-wang", 2), ("metropolis", 3, "swendsen-wang", 2),
              ("metropolis", 4, "swendsen-wang", 2), ("metropolis", 3, "swendsen-wang", 3),
              (INDEPENDENCE, 1, "swendsen-wang", 1), ("metropolis", 2, "wolff", 1)]
    chains = [QftmlChain(L, *c) for c in q_cfgs]
    chains += [ReferenceChain(L, hits, cov, step)
               for hits, cov in ((1, 0.5), (1, 1.0), (1, 2.0), (2, 0.5), (2, 1.0), (3, 0.5), (3, 1.0))]
    for c in chains:
        c.thermalize(500)
    round_robin(chains, sweeps, block)
    out = [summarize(c) for c in chains]
    for o in out:
        log(f"  L={L} {o['name']:45s} tau |m| {o['abs_m']['tau_int']:6.2f}({o['abs_m']['tau_int_error']:.2f}) "
            f"m2 {o['m2']['tau_int']:6.2f} E {o['E']['tau_int']:6.2f}  cpu/sweep {1e3 * o['cpu_s_per_sweep']:.3f} ms  "
            f"cost {1e3 * o['cost_s']:.2f}({1e3 * o['cost_s_error']:.2f}) ms")
    return out


def tuned_step(L):
    s = QftmlChain(L, cluster="none").s
    s.thermalize(300)
    return s.step


def size_series(sizes, best_q, best_ref, sweeps_for, block_for, step, therm=1000, save=None):
    rows = []
    for L in sizes:
        q = [QftmlChain(L, **{k: best_q[k] for k in ("algorithm", "hits", "cluster")},
                        every=best_q["cluster_every"], seed=seed) for seed in (1, 2)]
        ref = ReferenceChain(L, best_ref["hits"], best_ref["coverage"], step)
        for c in q + [ref]:
            c.thermalize(therm)
        round_robin([q[0], ref, q[1]], sweeps_for(L), block_for(L))
        sq, sq2, sr = summarize(q[0]), summarize(q[1]), summarize(ref)
        ratio, span = pair_ratio(ref, q[0])
        rel = np.hypot(sr["abs_m"]["tau_int_error"] / sr["abs_m"]["tau_int"],
                       sq["abs_m"]["tau_int_error"] / sq["abs_m"]["tau_int"])
        cost_ratio = ratio * sr["abs_m"]["tau_int"] / sq["abs_m"]["tau_int"]
        (a, ea), (b, eb) = (sq["abs_m"]["mean"], sq["abs_m"]["error"]), (sq2["abs_m"]["mean"], sq2["abs_m"]["error"])
        row = {"L": L, "qftml": sq, "qftml_seed2": sq2, "reference": sr, "cpu_ratio_pairs": ratio,
               "cpu_ratio_range": span, "cost_ratio": cost_ratio, "cost_ratio_error": cost_ratio * rel,
               "seeds_abs_m_pull": (a - b) / np.hypot(ea, eb)}
        rows.append(row)
        if save:
            save(rows)
        sp = sq["cpu_split_s_per_sweep"]
        log(f"  L={L:4d} qftml tau|m| {sq['abs_m']['tau_int']:6.2f}({sq['abs_m']['tau_int_error']:.2f}) "
            f"cost {1e3 * sq['cost_s']:9.3f} ms | ref tau|m| {sr['abs_m']['tau_int']:6.2f}"
            f"({sr['abs_m']['tau_int_error']:.2f}) cost {1e3 * sr['cost_s']:9.3f} ms | ref/qftml "
            f"{cost_ratio:.2f}({cost_ratio * rel:.2f}) [cpu {ratio:.2f}, {span[0]:.2f}-{span[1]:.2f}] | "
            f"sign changes {sq['sign_changes']}/{sr['sign_changes']}, seeds |m| pull {row['seeds_abs_m_pull']:+.2f} | "
            "split " + " ".join(f"{k} {1e9 * v / L / L:.1f}" for k, v in sp.items()) + " ns/site")
    return rows


def local_series(sizes, factor):
    rows = []
    for L in sizes:
        guess = 0.07 * L ** 2.17  # tau_int(|m|) of one-hit Metropolis, roughly (measured at 64)
        every = max(1, int(guess // 25))
        c = QftmlChain(L, hits=1, cluster="none")
        c.thermalize(int(20 * guess))
        n = int(factor * guess) // every * every
        c.block(n, every)
        o = summarize(c, every)
        rows.append(o)
        log(f"  L={L:4d} local Metropolis x1: tau |m| {o['abs_m']['tau_int']:8.1f}({o['abs_m']['tau_int_error']:.1f}) "
            f"m2 {o['m2']['tau_int']:8.1f} E {o['E']['tau_int']:8.1f}  cost {1e3 * o['cost_s']:.2f} ms, "
            f"sign changes {o['sign_changes']} ({n} sweeps, measured every {every})")
    return rows


def fit_z(rows, key, Lmin):
    L = np.array([r["L"] for r in rows if r["L"] >= Lmin], dtype=float)
    t = np.array([r[key]["tau_int"] for r in rows if r["L"] >= Lmin])
    dt = np.array([r[key]["tau_int_error"] for r in rows if r["L"] >= Lmin])
    if len(set(L)) < 2:
        return None
    (z, c), cov = np.polyfit(np.log(L), np.log(t), 1, w=t / dt, cov="unscaled")
    chi2 = float(np.sum(((np.log(t) - (z * np.log(L) + c)) * t / dt) ** 2))
    return {"z": float(z), "error": float(np.sqrt(cov[0, 0])), "chi2": chi2, "dof": len(L) - 2,
            "sizes": L.astype(int).tolist()}


def z_fits(res):
    return {"qftml": {k: fit_z([r["qftml"] for r in res["sizes"]], k, 32) for k in ("abs_m", "m2", "E")},
            "reference": {k: fit_z([r["reference"] for r in res["sizes"]], k, 32) for k in ("abs_m", "m2", "E")},
            "local": {k: fit_z(res["local"], k, 16) for k in ("abs_m", "m2", "E")}}


def merge_results(parts):
    """Several runs (e.g. sizes run as separate processes) as one result: sizes and local chains
    concatenated in order of L, z refitted, the first run's scan and weak scaling."""
    res = dict(parts[0])
    res["sizes"] = sorted((r for p in parts for r in p.get("sizes", [])), key=lambda r: r["L"])
    res["local"] = sorted((r for p in parts for r in p.get("local", [])), key=lambda r: r["L"])
    res["scan"] = {k: v for p in parts for k, v in p.get("scan", {}).items()}
    res["weak_scaling"] = next((p["weak_scaling"] for p in parts if "weak_scaling" in p), None)
    res["command"] = "; ".join(p["command"] for p in parts)
    res["machine"]["load_average_end"] = max((p["machine"].get("load_average_end", p["machine"]["load_average"])
                                              for p in parts), key=lambda x: x[0])
    res["seconds"] = max(p.get("seconds", 0.0) for p in parts)
    res["z"] = z_fits(res)
    return res


# --- weak scaling (run under mpiexec -n 2 by weak_scaling()) -------------------------------------

def weak_worker(out, rounds, sweeps):
    comm = MPI.COMM_WORLD
    local = (2048, 1024)
    lat1 = qftml.Lattice(local, MPI.COMM_SELF)
    lat2 = qftml.Lattice((local[0] * comm.size, local[1]), comm, grid=[comm.size, 1])
    s1 = qftml.Sampler(qftml.Action.homogeneous(lat1, KAPPA, MU2, LAM), seed=1 + comm.rank, cluster="swendsen-wang")
    s2 = qftml.Sampler(qftml.Action.homogeneous(lat2, KAPPA, MU2, LAM), seed=1, cluster="swendsen-wang")
    for s in (s1, s2):
        s.thermalize(30)
    res = {"alone": [], "together": []}
    for _ in range(rounds):
        for key, s, c in (("alone", s1, MPI.COMM_SELF), ("together", s2, comm)):
            s._core.reset_timers()
            comm.Barrier()
            t0 = MPI.Wtime()
            s.sweep(sweeps)
            comm.Barrier()
            wall = MPI.Wtime() - t0
            t = s.timers()
            cl = sum(t[f"cluster_{k}"] for k in ("bonds", "labels", "merge", "flips"))
            res[key].append({"wall_s_per_sweep": wall / sweeps,
                             "cluster_cpu_s_per_update": comm.allreduce(cl, op=MPI.MAX) / sweeps,
                             "merge_cpu_s_per_update": comm.allreduce(t["cluster_merge"], op=MPI.MAX) / sweeps})
    if comm.rank == 0:
        summary = {"local_shape": list(local), "ranks": comm.size, "rounds": rounds, "sweeps": sweeps, "raw": res}
        for q in ("wall_s_per_sweep", "cluster_cpu_s_per_update", "merge_cpu_s_per_update"):
            a = np.array([r[q] for r in res["alone"]])
            b = np.array([r[q] for r in res["together"]])
            summary[q] = {"alone": float(np.median(a)), "together": float(np.median(b))}
            if q != "merge_cpu_s_per_update":
                summary[q]["efficiency"] = float(np.median(a / b))
        with open(out, "w") as f:
            json.dump(summary, f, indent=1)


def weak_scaling(out_dir, rounds, sweeps):
    out = os.path.join(out_dir, "cluster_weak.json")
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    cmd = [mpiexec, "-n", "2", sys.executable, os.path.abspath(__file__), "--weak-worker", out,
           "--weak-rounds", str(rounds), "--weak-sweeps", str(sweeps)]
    subprocess.run(cmd, check=True, timeout=3600)
    with open(out) as f:
        w = json.load(f)
    log(f"  2048x1024 per rank: cluster update {1e3 * w['cluster_cpu_s_per_update']['alone']:.1f} ms alone, "
        f"{1e3 * w['cluster_cpu_s_per_update']['together']:.1f} ms on 2 ranks (merge "
        f"{1e3 * w['merge_cpu_s_per_update']['together']:.2f} ms): efficiency "
        f"{w['cluster_cpu_s_per_update']['efficiency']:.2f} (CPU); whole sweep "
        f"{w['wall_s_per_sweep']['efficiency']:.2f} (wall)")
    return w


# --- Markdown tables for docs/performance.md and docs/cluster_updates.md (--table) --------------

def _tau(o, key):
    return f"{o[key]['tau_int']:.1f}({10 * o[key]['tau_int_error']:.0f})" if o[key]["tau_int"] < 100 else \
        f"{o[key]['tau_int']:.0f}({o[key]['tau_int_error']:.0f})"


def _z(v):
    return f"{v['z']:.2f}({100 * v['error']:.0f}), chi2/dof {v['chi2']:.1f}/{v['dof']}" if v else "-"


def tables(res):
    """The benchmark's Markdown tables from its JSON result."""
    out = [f"Run {res['machine']['date_utc']} UTC, `{res['command']}`, load average "
           f"{res['machine']['load_average'][0]:.1f} at start, {res['machine']['load_average_end'][0]:.1f} at end, "
           f"{res['seconds'] / 60:.0f} min wall.", "",
           "| L | chain | sweeps | sign changes of m | tau_int(abs m) | tau_int(m^2) | tau_int(E) | CPU ms/sweep |"
           " cost = 2 tau x CPU (ms) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["sizes"]:
        for key in ("qftml", "qftml_seed2", "reference"):
            o = r[key]
            out.append(f"| {r['L']} | {o['name']}{' (seed 2)' if key == 'qftml_seed2' else ''} | {o['sweeps']} | "
                       f"{o['sign_changes']} | {_tau(o, 'abs_m')} | {_tau(o, 'm2')} | {_tau(o, 'E')} | "
                       f"{1e3 * o['cpu_s_per_sweep']:.3f} | {1e3 * o['cost_s']:.2f}({1e3 * o['cost_s_error']:.2f}) |")
    for o in res["local"]:
        out.append(f"| {o['L']} | {o['name']} (measured every {o['measure_every']}) | {o['sweeps']} | "
                   f"{o['sign_changes']} | "
                   f"{_tau(o, 'abs_m')} | {_tau(o, 'm2')} | {_tau(o, 'E')} | {1e3 * o['cpu_s_per_sweep']:.3f} | "
                   f"{1e3 * o['cost_s']:.2f}({1e3 * o['cost_s_error']:.2f}) |")
    out += ["", "| L | reference / qftml cost per independent configuration | CPU/sweep ratio (median of block pairs) "
            "[range] | abs m seeds 1, 2 (pull) | qftml split: local, bonds, labels, merge, flips (ns/site/sweep) |",
            "|---|---|---|---|---|"]
    for r in res["sizes"]:
        sp, q = r["qftml"]["cpu_split_s_per_sweep"], r["qftml"]
        split = ", ".join(f"{1e9 * sp[k] / r['L'] ** 2:.1f}" for k in ("local", "bonds", "labels", "merge", "flips"))
        out.append(f"| {r['L']} | **{r['cost_ratio']:.1f}({10 * r['cost_ratio_error']:.0f})** | "
                   f"{r['cpu_ratio_pairs']:.2f} [{r['cpu_ratio_range'][0]:.2f}-{r['cpu_ratio_range'][1]:.2f}] | "
                   f"{q['abs_m']['mean']:.4f}, {r['qftml_seed2']['abs_m']['mean']:.4f} "
                   f"({r['seeds_abs_m_pull']:+.1f}) | {split} |")
    out += ["", "| z (weighted fit of ln tau vs ln L) | abs m | m^2 | E |", "|---|---|---|---|"]
    for who, zs in res["z"].items():
        out.append(f"| {who} ({', '.join(str(x) for x in (zs['abs_m'] or {}).get('sizes', []))}) | "
                   + " | ".join(_z(zs[k]) for k in ("abs_m", "m2", "E")) + " |")
    w = res.get("weak_scaling")
    if w:
        c, wall = w["cluster_cpu_s_per_update"], w["wall_s_per_sweep"]
        out += ["", f"Weak scaling, {w['local_shape'][0]} x {w['local_shape'][1]} sites per rank, {w['ranks']} ranks "
                f"(medians of {w['rounds']} rounds of {w['sweeps']} sweeps): cluster update {1e3 * c['alone']:.1f} ms "
                f"alone, {1e3 * c['together']:.1f} ms on {w['ranks']} ranks (merge "
                f"{1e3 * w['merge_cpu_s_per_update']['together']:.2f} ms): efficiency **{c['efficiency']:.2f}** (CPU); "
                f"whole sweep {wall['efficiency']:.2f} (wall)."]
    for L, rows in res["scan"].items():
        out += ["", f"Scan at L = {L} (round robin):", "",
                "| chain | tau_int(abs m) | tau_int(m^2) | tau_int(E) | CPU ms/sweep | cost (ms) |",
                "|---|---|---|---|---|---|"]
        for o in sorted(rows, key=lambda o: o["cost_s"]):
            out.append(f"| {o['name']} | {_tau(o, 'abs_m')} | {_tau(o, 'm2')} | {_tau(o, 'E')} | "
                       f"{1e3 * o['cpu_s_per_sweep']:.3f} | {1e3 * o['cost_s']:.2f}({1e3 * o['cost_s_error']:.2f}) |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="L <= 128, short chains (minutes)")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--local-sizes", type=int, nargs="*", default=None)
    ap.add_argument("--scan-sizes", type=int, nargs="*", default=None)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench-results", "cluster.json"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every chain length (a shared machine: 0.5)")
    ap.add_argument("--skip-weak", action="store_true")
    ap.add_argument("--skip-scan", action="store_true",
                    help="no scan: the cheapest settings of the L = 64 scan (qftml Metropolis x2 + Swendsen-Wang every "
                         "2nd sweep; numba Metropolis x2 + Wolff covering V)")
    ap.add_argument("--sweeps", type=int, nargs="*", default=None, help="chain length per size (with --sizes)")
    ap.add_argument("--local-factor", type=float, default=None, help="local chains: this many guessed tau_int")
    ap.add_argument("--table", default=None, nargs="+", metavar="JSON",
                    help="print the Markdown tables of one result (or of several runs merged), run nothing")
    ap.add_argument("--weak-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--weak-rounds", type=int, default=5)
    ap.add_argument("--weak-sweeps", type=int, default=4)
    args = ap.parse_args()
    if args.weak_worker:
        return weak_worker(args.weak_worker, args.weak_rounds, args.weak_sweeps)
    if args.table:
        parts = []
        for name in args.table:
            with open(name) as f:
                parts.append(json.load(f))
        print(tables(merge_results(parts)))
        return 0
    q = args.quick
    sizes = args.sizes if args.sizes is not None else ([32, 64, 128] if q else [32, 64, 128, 256, 512])
    local_sizes = args.local_sizes if args.local_sizes is not None else ([16, 32, 64] if q else [16, 32, 64, 128])
    scan_sizes = args.scan_sizes or ([64] if q else [64, 256])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    t_start = time.time()
    res = {"machine": {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "cores": os.cpu_count(),
                       "load_average": os.getloadavg()}, "couplings": {"kappa": KAPPA, "lam": LAM, "mu2": MU2},
           "command": " ".join(sys.argv)}
    log(f"cluster benchmark, load {os.getloadavg()[0]:.2f}")
    step = tuned_step(64)
    res["metropolis_step"] = step
    log(f"\n[1] scan of settings (round robin, cost = 2 tau_int(|m|) x CPU/sweep); Metropolis step {step:.3f}")
    res["scan"] = {}
    for L in ([] if args.skip_scan else scan_sizes):
        n = int(args.scale * (4000 if q else (20000 if L <= 64 else 6000)))
        res["scan"][str(L)] = scan(L, n, 500 if L <= 64 else 200, step)
    if args.skip_scan:
        best_q = {"code": "qftml", "algorithm": "metropolis", "hits": 2, "cluster": "swendsen-wang", "cluster_every": 2}
        best_ref = {"code": "numba", "hits": 2, "coverage": 1.0}
    else:
        decide = res["scan"][str(max(scan_sizes))]
        best_q = min((o for o in decide if o["config"]["code"] == "qftml"), key=lambda o: o["cost_s"])["config"]
        best_ref = min((o for o in decide if o["config"]["code"] == "numba"), key=lambda o: o["cost_s"])["config"]
        log(f"  cheapest at L={max(scan_sizes)}: qftml {best_q}, reference {best_ref}")
    res["best"] = {"qftml": best_q, "reference": best_ref}

    log("\n[2] sizes: the cheapest settings side by side (blocks alternate), then local Metropolis alone")

    def sweeps_for(L):
        if args.sweeps:
            return args.sweeps[sizes.index(L)]
        return int(args.scale * ((4000 if q else 20000) if L <= 128 else (10000 if L <= 256 else 6000)))

    def save(rows, key="sizes"):
        res[key] = rows
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)

    res["sizes"] = size_series(sizes, best_q, best_ref, sweeps_for, lambda L: 500 if L <= 128 else 200, step,
                               save=save)
    res["local"] = local_series(local_sizes, args.local_factor or args.scale * (200 if q else 400))
    res["z"] = z_fits(res)
    for who, zs in res["z"].items():
        log(f"  z {who:9s}: " + ", ".join(f"{k} {v['z']:.3f}({v['error']:.3f}) chi2/dof {v['chi2']:.1f}/{v['dof']}"
                                           for k, v in zs.items() if v))
    if not args.skip_weak:
        log("\n[3] weak scaling of the cluster update (mpiexec -n 2)")
        try:
            res["weak_scaling"] = weak_scaling(os.path.dirname(args.out), args.weak_rounds, args.weak_sweeps)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            log(f"  weak-scaling run failed: {e}")
    res["seconds"] = time.time() - t_start
    res["machine"]["load_average_end"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    log(f"\nwrote {os.path.relpath(args.out, ROOT)} ({res['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
