"""`qftml analyze FILE.h5 [--json] [--therm N] [--bin B] [--quiet]`.

Exports HELP, add_arguments(parser), run(args) (the cli contract). The work is in qftml.stats.analysis:
every scalar observable with mean, Gamma-method error and tau_int; phi^2, chi, Binder cumulant,
energy per link, second-moment correlation length; the time-slice correlator C(t).
Runs on rank 0 only (the data are small); other ranks of an mpiexec launch wait for its verdict.
Exit codes: 0 done; 2 missing/damaged file or too few records.
"""
from __future__ import annotations

import json

from qftml.io.json_output import json_safe

HELP = "error analysis of an ensemble file: means, Gamma-method errors, tau_int, chi, Binder, xi2, C(t)"


def add_arguments(parser):
    from qftml.cli import add_ensemble_arguments

    add_ensemble_arguments(parser, therm_help="drop the first N stored records (thermalisation cut; default 0)",
                           bin_help="average blocks of B records before the analysis (default 1)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.add_argument("--no-configs", action="store_true",
                        help="do not read /configs (skips xi2 per direction)")
    parser.add_argument("--quiet", action="store_true", help="accepted for symmetry with other commands")


def _analyze(args):
    from qftml.io.ensembles import open_ensemble
    from qftml.stats.analysis import analyze

    with open_ensemble(args.file) as ens:
        return analyze(ens, therm=args.therm, bin=args.bin, use_configs=not args.no_configs)


def run(args) -> int:
    from mpi4py import MPI

    from qftml.collective import on_root
    from qftml.stats.analysis import format_report

    kept = {}  # the result stays on rank 0; the others learn the verdict
    on_root(MPI.COMM_WORLD, lambda: kept.update(result=_analyze(args)), (ValueError, OSError))
    if MPI.COMM_WORLD.rank != 0:
        return 0
    result = kept["result"]
    if args.json:
        print(json.dumps(json_safe(result), indent=1), flush=True)
    else:
        print(format_report(result), flush=True)
    return 0
