"""`qftml reweight CONFIG.toml [--set section.key=value ...] [--quiet]`: ensembles of S -> target(s) A.

Exports HELP, add_arguments(parser), run(args) (the cli contract), and for scripts/tests:
    SCHEMA                                   [reweight] [target] [scan] [output]
    load_reweight_config(path, overrides, comm) -> dict   validated, defaults filled
The work and the outputs (OUT.h5, OUT.json, OUT.txt, PNGs) are qftml.reweighting.driver's.
Exit codes: 0 done; 2 bad configuration or input.
"""
from __future__ import annotations

import sys

from qftml.collective import raise_agreed
from qftml.config import OUTPUT, Spec, check_outputs, load_config

HELP = "reweight ensembles of S to new, extrapolated and complex couplings A (with ESS and average phase)"

REWEIGHT = {
    "ensembles": Spec("list[str]", help="ensemble files of one action S (replicas), written by `qftml sample`"),
    "therm": Spec("int", 0, min=0, help="records dropped at the start of every ensemble"),
    "observables": Spec("list[str]", ["phi2", "abs_m", "m2", "chi", "binder", "xi2"],
                        help="observables in the table and plots (all are in the JSON/HDF5)"),
    "errors": Spec("str", "gamma", choices=("gamma", "jackknife"), help="error shown in the table and plots"),
    "n_bins": Spec("int", 50, min=2, help="jackknife bins"),
    "gamma_S": Spec("float", 2.0, min=0.0, help="Wolff's S of the Gamma-method window"),
    "ess_min": Spec("float", 100.0, min=0.0, help="points with a smaller effective sample size are flagged"),
    "phase_sigma": Spec("float", 3.0, min=0.0,
                        help="complex targets: points with |<phase>| < phase_sigma * error are flagged"),
    "direct": Spec("list[str]", [], help="ensemble files of direct simulations to overlay"),
    "direct_values": Spec("list[float]", [], help="the scanned coupling of each direct ensemble"),
    "plot": Spec("bool", True, help="write the PNG plots"),
}
TARGET = {
    "base": Spec("str", "ensemble", choices=("ensemble", "action"),
                 help="'ensemble': A = S + changes; 'action': A = the action below + changes"),
    "kappa": Spec("float", 1.0), "mu2": Spec("float", -0.9515), "lam": Spec("float", 0.7), "h": Spec("float", 0.0),
    "couplings": Spec("str", "", help="base = 'action': inhomogeneous A from /couplings of this file"),
    "extra": Spec("str", "", choices=("", "nnn"), help="links of the g term ('nnn' = 2D diagonals)"),
    "extra_offsets": Spec("list[list[int]]", [], help="explicit offsets of the g term instead of `extra`"),
    "g": Spec("float", 0.0, help="adds -g sum_extra phi_x phi_{x+e}"),
    "dw": Spec("float", 0.0, help="adds -dw sum_nn phi phi"), "da": Spec("float", 0.0, help="adds da sum phi^2"),
    "db": Spec("float", 0.0, help="adds db sum phi^4"), "dr": Spec("float", 0.0, help="adds dr sum phi"),
    "g_imag": Spec("float", 0.0, help="imaginary part: adds -i g_imag sum_extra phi phi"),
    "dw_imag": Spec("float", 0.0), "da_imag": Spec("float", 0.0, help="adds i da_imag sum phi^2"),
    "db_imag": Spec("float", 0.0), "dr_imag": Spec("float", 0.0),
}
SCAN = {
    "key": Spec("str", "", help="target key to scan (empty: one point)"),
    "values": Spec("list[float]", [], help="values of the key (or use start/stop/num)"),
    "start": Spec("float", 0.0), "stop": Spec("float", 0.0), "num": Spec("int", 0, min=0),
}
SCHEMA = {"reweight": REWEIGHT, "target": TARGET, "scan": SCAN, "output": OUTPUT}


def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)
    parser.epilog = "exit codes: 0 done, 2 invalid configuration or input (nothing written)"


def load_reweight_config(path, overrides=(), comm=None) -> dict:
    from qftml.reweighting.driver import check_config

    cfg = load_config(path, SCHEMA, overrides, comm)
    check_config(cfg)
    return cfg


def run(args) -> int:
    from mpi4py import MPI

    from qftml.reweighting import driver
    from qftml.reweighting.estimator import ReweightError

    comm = MPI.COMM_WORLD
    cfg = load_reweight_config(args.config, args.overrides, comm)
    check_outputs(driver.output_files(cfg), cfg["output"]["overwrite"], comm)
    error = None
    try:
        result = driver.run(cfg, quiet=args.quiet, comm=comm)
        if comm.rank == 0:
            table, files = driver.outputs(cfg, result)
            print(table, flush=True)
            print("wrote " + ", ".join(files), file=sys.stderr, flush=True)
    except (ReweightError, OSError) as e:
        error = str(e)
    # rank 0 alone runs the estimator and writes: every rank learns its verdict
    raise_agreed(comm, error)
    return 0
