"""Orchestrating qftml on Slurm from Python: a sweep over one coupling, an analysis per ensemble, a table.

    python examples/slurm_pipeline.py CONFIG.toml --sweep 'action.mu2=[-1.2, -0.9515, -0.7]' \
        [--ntasks 4] [--time 02:00:00] [--partition NAME] [--account NAME] [--set section.key=value ...]

Run it on a login node with the environment in which qftml is installed (the jobs use this
interpreter's `qftml`). What it does, with the API of qftml.slurm:
  1. render the `sweep` template (a job array, one `qftml sample` ensemble per value, files
     <output stem>.taskNNN.h5) and submit it;
  2. submit one `analyze` job per ensemble, each with --dependency=afterok on the array, so the
     analyses start only when every ensemble is complete (a failed task cancels nothing: wait()
     reports the job that can never start);
  3. wait for all jobs, collect the analyses (JSON written by `qftml analyze --json`) and print
     <|m|>, chi and the Binder cumulant U with their Gamma-method errors for each value.
Every job is checkpointed, asks for USR1 before its time limit and requeues itself; nothing here
has to handle that. See docs/cluster.md.
"""
from __future__ import annotations

import argparse
import sys

from qftml import slurm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a `qftml sample` TOML config with [output] path")
    ap.add_argument("--sweep", required=True, help="section.key=[v1, v2, ...]")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    ap.add_argument("--ntasks", type=int, default=2, help="MPI ranks per ensemble")
    ap.add_argument("--time", default="01:00:00")
    ap.add_argument("--partition")
    ap.add_argument("--account")
    ap.add_argument("--mpi", default="pmi2", help="srun --mpi plugin (pmi2: MPICH; pmix: Open MPI)")
    ap.add_argument("--overcommit", action="store_true", help="more ranks than CPUs (small test clusters)")
    ap.add_argument("--timeout", type=float, default=None, help="give up waiting after this many seconds")
    args = ap.parse_args(argv)

    common = dict(time=args.time, partition=args.partition, account=args.account, mpi=args.mpi,
                  overcommit=args.overcommit)
    key, values = slurm.parse_sweep(args.sweep)

    # 1. the ensembles: one array job
    sweep = slurm.render("sweep", args.config, args.overrides,
                         slurm.JobOptions(ntasks=args.ntasks, **common), sweep=(key, values))
    ensembles = slurm.submit(sweep, script_path=".qftml-jobs/sweep.sbatch")
    print(f"submitted sweep over {key} as array job {ensembles.id}: {len(values)} tasks", flush=True)

    # 2. one analysis per ensemble, after the whole array succeeded
    analyses = []
    for i, ensemble in enumerate(ensembles.outputs):
        job = slurm.render("analyze", args.config, args.overrides, slurm.JobOptions(ntasks=1, **common),
                           ensemble=ensemble)
        analyses.append(slurm.submit(job, after=[ensembles], script_path=f".qftml-jobs/analyze-{i:03d}.sbatch"))
    print("submitted analyses: " + " ".join(j.id for j in analyses), flush=True)

    # 3. wait, collect, tabulate
    slurm.wait([ensembles, *analyses], timeout=args.timeout)
    print(f"\n{key:>14s} {'<|m|>':>22s} {'chi':>22s} {'U (Binder)':>22s}")
    for value, job in zip(values, analyses):
        result = job.collect()
        abs_m = result["observables"]["abs_m"]
        chi, binder = result["derived"]["chi"], result["derived"]["binder"]
        cells = [f"{q['mean']:.6f} +- {q['error']:.6f}" for q in (abs_m, chi, binder)]
        print(f"{slurm.toml_value(value):>14s} " + " ".join(f"{c:>22s}" for c in cells))
    print(f"\nfiles: {', '.join(ensembles.outputs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
