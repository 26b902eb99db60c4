"""`mpiexec -n N qftml irg CONFIG.toml [--set section.key=value ...] [--resume] [--quiet]`: inverse RG.

Direct chains at L/b and L, Binder crossing, field rescaling, training of the transposed
convolution, upscaling to b^k L (irg.method = "refined": each step followed by block-constrained and
unconstrained local + cluster sweeps, qftml.rg.refine), critical exponents, results file and plots; the work is in
qftml.rg.pipeline (steps and files listed there and in docs/irg.md), the plots in qftml.plots.irg.
Exit codes: 0 done; 2 bad configuration/input; 3 a direct chain stopped by SIGTERM/SIGUSR1 after
writing its checkpoint (continue with --resume).

Exports HELP, SCHEMA, add_arguments(parser), run(args) (the cli contract).
"""
from __future__ import annotations



def __getattr__(name):
    """SCHEMA (the command's schema) from qftml.rg.pipeline, imported on use: `qftml --help` and
    every other command start without the analysis stack."""
    if name == "SCHEMA":
        from qftml.rg.pipeline import SCHEMA

        return SCHEMA
    raise AttributeError(name)

HELP = "inverse RG: train a transposed convolution, upscale (and refine) an ensemble to b^k L, critical exponents"


def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the direct chains from their checkpoints (chains without one start anew)")
    parser.epilog = ("exit codes: 0 done, 2 invalid configuration or input, "
                     "3 a direct chain stopped by SIGTERM/SIGUSR1 after a checkpoint (resume with --resume)")


def report(result, log) -> None:
    """The size-pair and exponent tables, timings and files of a finished run."""
    import json

    from qftml.stats.errors import format_value

    log("\n  size pair   mu2_c          U(mu2_c)       nu (Binder matching)  gamma/nu (<m^2>, mu2*)  beta/nu (mu2*)")
    for p in result.pairs:
        log(f"  {p['L_small']:4d}/{p['L_large']:<4d}   " + "  ".join(
            f"{format_value(*p[q]):>14s}" for q in ("mu2_c", "U_c", "nu", "gamma_nu", "beta_nu")))
    log("\n  exponent   method                        value      error    exact  deviation")
    for e in result.exponents:
        log(f"  {e.name:9s}  {e.method:27s} {e.value:8.4f}  {e.error:8.4f}  {e.exact:7.4f}  "
            f"{100 * (e.value - e.exact) / e.exact:+7.2f}%")
    log(f"\n  timings: {json.dumps({k: round(v, 3) for k, v in result.timings.items()})}")
    log(f"  results -> {result.paths['results']}")


def run(args) -> int:
    from mpi4py import MPI

    from qftml.ensemble_generation import EXIT_PREEMPTED
    from qftml.rg.pipeline import Preempted, load_irg_config, run_irg

    comm = MPI.COMM_WORLD
    cfg = load_irg_config(args.config, args.overrides, comm)

    def log(msg):
        if comm.rank == 0:        # --quiet silences the progress bars, not the report
            print(msg, flush=True)

    try:
        result = run_irg(cfg, comm=comm, quiet=args.quiet, resume=args.resume, log=log)
    except Preempted as e:
        log(str(e))
        return EXIT_PREEMPTED
    report(result, log)
    if cfg["irg"]["plots"]:
        from qftml.collective import on_root
        from qftml.plots.irg import plot_all

        for path in on_root(comm, lambda: plot_all(result), (ValueError, OSError)):
            log(f"  plot -> {path}")
    return 0
