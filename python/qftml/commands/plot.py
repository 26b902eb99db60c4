"""`qftml plot FILE.h5 [--out DIR] [--therm N] [--bin B] [--quiet]`.

Exports HELP, add_arguments(parser), run(args) (the cli contract). The work is in qftml.plots.ensemble:
history.png (Monte Carlo history), histogram_m.png, correlator.png (C(t) with errors, log y),
configuration.png (the last stored configuration). Runs on rank 0 only.
"""
from __future__ import annotations

import os

HELP = "PNG plots of an ensemble file: Monte Carlo history, histogram of m, C(t), a configuration"


def add_arguments(parser):
    from qftml.cli import add_ensemble_arguments

    add_ensemble_arguments(parser, therm_help="records dropped before histogram and correlator (the history shows all)",
                           bin_help="bin size for the correlator errors")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: <file without .h5>_plots next to the file)")
    parser.add_argument("--quiet", action="store_true", help="do not list the files written")


def run(args) -> int:
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank != 0:
        return 0
    from qftml.io.ensembles import open_ensemble
    from qftml.plots.ensemble import plot_all

    out = args.out or os.path.splitext(args.file)[0] + "_plots"
    with open_ensemble(args.file) as ens:
        written = plot_all(ens, out, therm=args.therm, bin=args.bin)
    if not args.quiet:
        for path in written:
            print(path, flush=True)
    return 0
