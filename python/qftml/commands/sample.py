"""`qftml sample CONFIG.toml [--set section.key=value ...] [--resume] [--quiet]`.

Exports HELP, add_arguments(parser), run(args) (the cli contract). The work is in qftml.ensemble_generation.
Exit codes: 0 done; 2 bad configuration/input (nothing written); 3 stopped by SIGTERM/SIGUSR1
after writing a checkpoint (continue with --resume).
"""
from __future__ import annotations

HELP = "generate an ensemble: thermalise, sweep, measure, write HDF5; checkpoints and --resume"


def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue the chain from the checkpoint next to output.path (any rank count)")
    parser.epilog = ("exit codes: 0 done, 2 invalid configuration or input (nothing written), "
                     "3 stopped by SIGTERM/SIGUSR1 after a checkpoint (resume with --resume)")


def run(args) -> int:
    from mpi4py import MPI

    from qftml.ensemble_generation import load_sample_config, run_sample

    comm = MPI.COMM_WORLD
    cfg = load_sample_config(args.config, args.overrides, comm)
    return run_sample(cfg, resume=args.resume, quiet=args.quiet, comm=comm)
