"""Time per learning epoch, split into sampling, gradient and communication (qftml.learning.gradient).

    .venv/bin/python benchmarks/bench_learning.py            runs itself on 1 and 2 ranks, prints a table
    mpiexec -n N .venv/bin/python benchmarks/bench_learning.py --row   one row (N ranks, one domain)

Setup: 64^2 lattice, inhomogeneous S (w, a, b per site/link) learning the homogeneous phi^4 target,
100 samples per epoch, 2 independence-sampler sweeps between samples, 5 sweeps after each update; the first
epoch (thermalisation) is not timed. "gradient" is the densities of S and A, the local sums and
(with the Fisher preconditioner) the site blocks; "communication" is the allreduce per batch and
per epoch (plus the halo refresh when A has links S lacks); "sampling" is the rest (sweeps).
"checkpoint" is one trainer checkpoint (qftml.learning.driver.save_trainer: couplings, optimiser
state and the field as hyperslabs, fsync, atomic rename), median of 3.
"""
import os
import subprocess
import sys


def row(epochs=5, precondition="fisher"):
    import numpy as np
    from mpi4py import MPI

    import qftml
    from qftml import learning as L
    from qftml.collective import make_communicators
    from qftml.learning import optimizers as O
    comm = MPI.COMM_WORLD
    comms = make_communicators(comm, 1)
    lat = qftml.Lattice((64, 64), comm=comms.domain)
    start = L.random_couplings(lat, 5, {"w": (0.5, 1.5), "a": (1.0, 2.0), "b": (0.1, 0.3), "r": 0.0})
    model = L.Model(lat, start, b_floor=1e-3)
    target = qftml.Action.homogeneous(lat)
    trainer = L.Trainer(model, target, O.SGD(1e-4), comms, seed=1, samples=100, sweeps_between=2,
                        thermalize=20, thermalize_after_update=5, algorithm="independence", precondition=precondition)
    trainer.run_epoch()
    keys = ("sampling", "gradient", "communication", "total")
    acc = np.zeros(4)
    for _ in range(epochs):
        rec = trainer.run_epoch()
        acc += [rec.timings[k] for k in keys]
    comm.Allreduce(MPI.IN_PLACE, acc, op=MPI.MAX)  # the slowest rank sets the pace
    acc /= epochs
    ckpt = _checkpoint_seconds(trainer, comms)
    if comm.rank == 0:
        s, g, c, t = acc
        print(f"| {comm.size} | {precondition} | {t * 1e3:.1f} | {s * 1e3:.1f} | {g * 1e3:.1f} | {c * 1e3:.2f} | "
              f"{100 * (g + c) / t:.1f}% | {ckpt * 1e3:.1f} |", flush=True)


def _checkpoint_seconds(trainer, comms, repeats=3):
    import shutil
    import tempfile
    import time

    from mpi4py import MPI

    from qftml.learning.driver import save_trainer

    tmp = comms.world.bcast(tempfile.mkdtemp() if comms.world.rank == 0 else None, root=0)
    times = []
    for _ in range(repeats):
        comms.world.Barrier()
        t0 = time.perf_counter()
        save_trainer(f"{tmp}/bench.ckpt", trainer, comms, {"bench": True}, {})
        times.append(comms.world.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    if comms.world.rank == 0:
        shutil.rmtree(tmp)
    return sorted(times)[len(times) // 2]


def main():
    if "--row" in sys.argv:
        for pre in ("none", "fisher"):
            row(precondition=pre)
        return 0
    here = os.path.abspath(__file__)
    bindir = os.path.dirname(sys.executable)
    print("| ranks | preconditioner | epoch [ms] | sampling [ms] | gradient [ms] | communication [ms] | "
          "gradient + comm. | checkpoint [ms] |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for n in (1, 2):
        code = subprocess.call([os.path.join(bindir, "mpiexec"), "-n", str(n), sys.executable, here, "--row"],
                               stdin=subprocess.DEVNULL)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
