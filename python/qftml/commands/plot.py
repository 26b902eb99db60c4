"""`qftml plot FILE.h5 [--out DIR] [--therm N] [--bin B] [--overwrite] [--quiet]`.

Exports HELP, add_arguments(parser), run(args) (the cli contract), plot_files(ens, out) (the PNGs it
writes). The work is in qftml.plots.ensemble: history.png (Monte Carlo history), histogram_m.png,
correlator.png (C(t) with errors, log y), configuration.png (the last stored configuration). Runs on
rank 0 only (the others wait for its verdict). Before any plot: the file is read, --therm/--bin leave
enough records (the correlator's Gamma-method errors need MIN_CORRELATOR_BINS), and --out is a
writable directory (or can be made) without the PNGs, unless --overwrite (the rule of every command).
Exit codes: 0 done; 2 missing/damaged file, too few records, unusable --out.
"""
from __future__ import annotations

import os

HELP = "PNG plots of an ensemble file: Monte Carlo history, histogram of m, C(t), a configuration"
MIN_CORRELATOR_BINS = 5   # pyerrors' Gamma method needs at least this many samples


def add_arguments(parser):
    from qftml.cli import add_ensemble_arguments

    add_ensemble_arguments(parser, therm_help="records dropped before histogram and correlator (the history shows all)",
                           bin_help="bin size for the correlator errors")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output directory (default: <file without .h5>_plots next to the file)")
    parser.add_argument("--overwrite", action="store_true", help="replace PNGs that exist in the output directory")
    parser.add_argument("--quiet", action="store_true", help="do not list the files written")


def plot_files(ens, out) -> list:
    """The PNGs plot_all writes for this ensemble into directory `out`."""
    names = ["history.png"]
    if "m" in ens.observables:
        names.append("histogram_m.png")
    if "slice_sums" in ens.observables:
        names.append("correlator.png")
    if ens.has_configs:
        names.append("configuration.png")
    return [os.path.join(out, n) for n in names]


def _check(ens, args, out):
    from qftml.config import ConfigError, check_outputs

    left = ens.n_records - args.therm
    if left < 1:
        raise ConfigError(f"--therm {args.therm} leaves no records of {args.file} (it has {ens.n_records})")
    if "slice_sums" in ens.observables and left // args.bin < MIN_CORRELATOR_BINS:
        raise ConfigError(f"{args.file}: {left} records after --therm {args.therm} make {left // args.bin} bins of "
                          f"--bin {args.bin}; the correlator's errors need at least {MIN_CORRELATOR_BINS}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out}: exists and is not a directory")
    check_outputs(plot_files(ens, out), args.overwrite, None, key="--out", value=out,
                  hint=" (use --overwrite to replace it)")


def _plot(args):
    from qftml.io.ensembles import open_ensemble
    from qftml.plots.ensemble import plot_all

    out = args.out or os.path.splitext(args.file)[0] + "_plots"
    with open_ensemble(args.file) as ens:
        _check(ens, args, out)
        return plot_all(ens, out, therm=args.therm, bin=args.bin)


def run(args) -> int:
    from mpi4py import MPI

    from qftml.collective import on_root

    written = on_root(MPI.COMM_WORLD, lambda: _plot(args), (ValueError, OSError))
    if MPI.COMM_WORLD.rank == 0 and not args.quiet:
        for path in written:
            print(path, flush=True)
    return 0
