"""Time per `qftml fit` epoch, split into data statistics, model sampling, gradient and communication.

    .venv/bin/python benchmarks/bench_fit.py [--n 10000] [--out DIR]   samples the data with `qftml sample`
                        (64^2, the seed's phi^4 target, n configurations), then runs itself on 1 and 2
                        ranks (one domain; and 2 replicas on 2 ranks) and prints a table
    mpiexec -n N .venv/bin/python benchmarks/bench_fit.py --row DATA.h5 --replicas R   one row

Setup: untied w, a, b (the model of examples/fit_recovery.toml) on 64^2, PCD with 100 samples per
epoch and replica, 2 heat-bath sweeps between samples, 5 after each update, natural gradient
(Fisher site blocks). Rows:
  full batch   the data statistics of every training row are computed once (column "once [s]": the
               engine's density kernel over 8000 rows) and reused: per epoch only sampling,
               gradient and communication remain;
  batch 1000   the data statistics of ~1000 rows per epoch (mini-batch) are part of every epoch.
"data" is the density kernel over the data rows, "sampling" the sweeps, "gradient" the model's
densities, the Fisher blocks and the update, "communication" every allreduce of data and model
statistics. Medians over the timed epochs (the first epoch, with the chain's thermalisation, is not
timed), wall clock of the slowest rank; "CPU/epoch" is the process CPU time per epoch (rank 0),
the number to compare on a shared machine. "MB/rank" is the data shard of a rank (training and
held-out rows: 8 bytes per site of its block and row), the memory that bounds the data set a rank
can hold.
"""
# bench-timeout: 1800
import argparse
import os
import subprocess
import sys
import tempfile
import time

SAMPLE = """[lattice]
shape = [64, 64]
[action]
kappa = 1.0
mu2 = -0.9515
lam = 0.7
[sampler]
algorithm = "metropolis"
hits = 1
thermalize = 200
sweeps = {n}
every = 1
seed = 4
checkpoint_every = 0
[output]
path = "{path}"
configs = true
overwrite = true
"""


def _cfg(data, batch):
    from qftml.learning.fit_driver import fit_schema

    cfg = {sec: {k: s.default for k, s in keys.items()} for sec, keys in fit_schema().items()}
    cfg["lattice"].update(shape=[64, 64], grid=[])
    cfg["sampler"].update(algorithm="independence", thermalize=20, seed=1)
    cfg["model"].update(learn=["w", "a", "b"], tied=[])
    cfg["data"].update(files=[data])
    cfg["training"].update(samples=100, sweeps_between=2, thermalize_after_update=5, lr=1e-3, batch=batch,
                           precondition="fisher")
    cfg["output"]["path"] = "unused.h5"
    return cfg


def row(data, replicas, epochs=5):
    import numpy as np
    from mpi4py import MPI

    import qftml
    from qftml.learning.driver import build_model, build_optimizer, make_trainer_communicators
    from qftml.learning.fit_driver import _load_data
    from qftml.learning.fit_trainer import FitTrainer

    comm = MPI.COMM_WORLD
    for batch in (0, 1000):
        cfg = _cfg(data, batch)
        comms = make_trainer_communicators(comm, replicas)
        lat = qftml.Lattice((64, 64), comm=comms.domain)
        comms.connect(lat)
        model = build_model(cfg["model"], lat, "real")
        t0 = time.perf_counter()
        shards, _ = _load_data(cfg, lat, comms)
        load = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
        mb = sum(b.nbytes for _, b in shards.values()) / 2 ** 20
        t = cfg["training"]
        tr = FitTrainer(model, build_optimizer(t), comms, shards, cfg["sampler"], t["samples"], t["sweeps_between"],
                        t["thermalize_after_update"], batch=batch, precondition="fisher", damping=0.1)
        first = tr.run_epoch()
        once = first.timings["data"] + 0.0 if batch == 0 else 0.0
        keys = ("data", "sampling", "gradient", "communication", "total")
        rows, cpu = [], []
        for _ in range(epochs):
            c0 = time.process_time()
            rec = tr.run_epoch()
            cpu.append(time.process_time() - c0)
            rows.append([rec.timings[k] for k in keys])
        rows = np.array(rows)
        comm.Allreduce(MPI.IN_PLACE, rows, op=MPI.MAX)
        med = np.median(rows, axis=0)
        once = comm.allreduce(once, op=MPI.MAX)
        if comm.rank == 0:
            d, s, g, c, tot = med
            label = "full batch" if batch == 0 else f"batch {batch}"
            print(f"| {comm.size} | {replicas} | {label} | {load:.2f} | {once:.2f} | {tot * 1e3:.0f} | {d * 1e3:.1f} | "
                  f"{s * 1e3:.0f} | {g * 1e3:.0f} | {c * 1e3:.1f} | {100 * (d + c) / tot:.1f}% | "
                  f"{np.median(cpu) * 1e3:.0f} | {mb:.0f} | {tr.n_train} |", flush=True)
        comm.Barrier()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--row", default=None)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.row:
        row(args.row, args.replicas)
        return 0
    bindir = os.path.dirname(sys.executable)
    out = args.out or tempfile.mkdtemp(prefix="bench_fit")
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "data.h5")
    cfg = os.path.join(out, "sample.toml")
    with open(cfg, "w") as f:
        f.write(SAMPLE.format(n=args.n, path=data))
    t0 = time.perf_counter()
    code = subprocess.call([os.path.join(bindir, "qftml"), "sample", cfg, "--quiet"], stdin=subprocess.DEVNULL)
    if code:
        return code
    print(f"data: {args.n} configurations of 64^2 by `qftml sample` in {time.perf_counter() - t0:.0f} s "
          f"({os.path.getsize(data) / 2 ** 20:.0f} MB), 20% held out", flush=True)
    print("| ranks | replicas | data term | load [s] | once [s] | epoch [ms] | data [ms] | sampling [ms] | "
          "gradient [ms] | communication [ms] | data + comm. | CPU/epoch [ms] | MB/rank | training rows |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    here = os.path.abspath(__file__)
    for n, r in ((1, 1), (2, 1), (2, 2)):
        code = subprocess.call([os.path.join(bindir, "mpiexec"), "-n", str(n), sys.executable, here, "--row", data,
                                "--replicas", str(r)], stdin=subprocess.DEVNULL)
        if code:
            return code
    if not args.out:
        os.remove(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
