"""`qftml bench CONFIG.toml`: sampler throughput of this build on this machine and rank count.

Runs the config's lattice, action and sampler for a few timed repeats and prints the median
site updates per second (total and per rank) and where the time went (site updates, blocked on
the halo exchange, packing it); with [sampler] cluster also sweeps per second, the cluster sizes
and the CPU share of the cluster update's phases. The full comparison against reference implementations is
`make bench` (benchmarks/run.py, docs/performance.md).
"""
from __future__ import annotations

import json
import time

import numpy as np
from mpi4py import MPI

from qftml.cli import add_config_arguments
from qftml.config import ACTION, LATTICE, SAMPLER, Spec, check_cluster, check_outputs, load_config

HELP = "measure sampler throughput (site updates per second per rank) for a config"

SCHEMA = {
    "lattice": LATTICE,
    "action": ACTION,
    "sampler": SAMPLER,
    "output": {"path": Spec("str", "", help="optional JSON file for the results"),
               "overwrite": Spec("bool", False, help="replace an existing results file (false: refuse)")},
    "bench": {
        "repeats": Spec("int", 5, min=1, help="timed repeats (the median is reported)"),
        "sweeps": Spec("int", 20, min=1, help="sweeps per repeat"),
    },
}


def add_arguments(parser):
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    import qftml
    from qftml.engine.action import Action

    comm = MPI.COMM_WORLD
    cfg = load_config(args.config, SCHEMA, args.overrides, comm)
    lat = qftml.Lattice(cfg["lattice"]["shape"], comm, grid=cfg["lattice"]["grid"] or None)
    a = cfg["action"]
    if a["couplings"]:
        raise ValueError("qftml bench times homogeneous actions; leave [action] couplings empty")
    action = Action.homogeneous(lat, a["kappa"], a["mu2"], a["lam"], a["h"], field=a["field"],
                                extra=a["extra"] or None, g=a["g"])
    s = cfg["sampler"]
    check_cluster(s, comm.size)
    if cfg["output"]["path"]:  # checked before the benchmark runs, not after
        check_outputs([cfg["output"]["path"]], cfg["output"]["overwrite"], comm)
    chain = qftml.Sampler(action, seed=s["seed"], algorithm=s["algorithm"], hits=s["hits"], step=s["step"],
                          cluster=s["cluster"], cluster_every=s["cluster_every"])
    chain.thermalize(min(s["thermalize"], 50))
    chain.reset_counters()
    rates, sweep_rates, shares, cpu = [], [], [], []
    for _ in range(cfg["bench"]["repeats"]):
        chain.reset_timers()
        comm.Barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        chain.sweep(cfg["bench"]["sweeps"])
        comm.Barrier()
        dt = time.perf_counter() - t0
        cpu.append(time.process_time() - c0)
        rates.append(lat.volume * s["hits"] * cfg["bench"]["sweeps"] / dt)
        sweep_rates.append(cfg["bench"]["sweeps"] / dt)
        shares.append(chain.timers())
    result = {
        "shape": list(lat.shape), "grid": list(lat.grid), "ranks": comm.size, "algorithm": s["algorithm"],
        "field": a["field"], "hits": s["hits"],
        "site_updates_per_s": float(np.median(rates)),
        "site_updates_per_s_per_rank": float(np.median(rates)) / comm.size,
        "halo_wait_fraction": float(np.median([t["halo_wait"] / max(t["update"], 1e-12) for t in shares])),
        "acceptance": chain.acceptance(),
        "sweeps_per_s": float(np.median(sweep_rates)),
    }
    if s["cluster"] != "none":
        phases = ("bonds", "labels", "merge", "flips")
        result["cluster"] = {"algorithm": s["cluster"], "every": s["cluster_every"], **chain.cluster_stats(),
                             "cpu_fraction": {p: float(np.median([t["cluster_" + p] / c for t, c in zip(shares, cpu)]))
                                              for p in phases},
                             "bytes_per_site": chain.cluster_bytes_per_site}
    if comm.rank == 0:
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print(f"{result['shape']} on {comm.size} rank(s), grid {result['grid']}, {s['algorithm']}: "
                  f"{result['site_updates_per_s'] / 1e6:.1f} M site updates/s "
                  f"({result['site_updates_per_s_per_rank'] / 1e6:.1f} M per rank), halo wait "
                  f"{100 * result['halo_wait_fraction']:.1f}% of update time, acceptance {result['acceptance']:.2f}")
            if "cluster" in result:
                c = result["cluster"]
                print(f"  {result['sweeps_per_s']:.1f} sweeps/s with {c['algorithm']} every {c['every']}: "
                      f"{c['clusters_per_update']:.0f} clusters per update, mean size {c['mean_cluster_size']:.3g}; "
                      "CPU share " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in c["cpu_fraction"].items()))
        if cfg["output"]["path"]:
            with open(cfg["output"]["path"], "w") as f:
                json.dump(result, f, indent=2)
    return 0
