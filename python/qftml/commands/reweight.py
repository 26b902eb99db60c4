"""`qftml reweight CONFIG.toml [--set section.key=value ...] [--quiet]`: ensembles of S -> target(s) A.

Exports HELP, add_arguments(parser), run(args) (the cli contract), and for scripts/tests:
    SCHEMA                          [reweight] [target] [scan] [output]
    load_reweight_config(path, overrides, comm) -> dict
    run_reweight(cfg, quiet=False, comm=None) -> (points, inputs) on rank 0, (None, inputs) elsewhere
    write_outputs(cfg, points, inputs, direct) ; plot_scan(...)

<O>_A = <O e^{-(A-S)}>_S / <e^{-(A-S)}>_S for every target point (qftml.reweighting.estimator); A - S comes
from stored sufficient statistics or, when needed, from each rank's hyperslab of every stored
configuration (qftml.reweighting.targets). Outputs, all from [output] path = OUT.h5:
    OUT.h5     /scan/key, /scan/values, /observables/<name>/{value,error,error_jackknife,tau_int}
               (complex targets: value_imag, error_imag, ... too), /diagnostics/{ess, abs_phase,
               abs_phase_error, phase, log_z_ratio, reliable, flag_low_ess, flag_phase}, attrs
    OUT.json   the same per point, with flags
    OUT.txt    the table printed on rank 0
    OUT_<obs>.png   each observable vs the scanned coupling with error bands; flagged points hollow red
    OUT_diagnostics.png  ESS and |average phase| vs the scanned coupling, thresholds drawn
    OUT_corr.png    the time-slice correlator at the first, middle and last points
Exit codes: 0 done; 2 bad configuration or input.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import numpy as np

from qftml.config import OUTPUT, ConfigError, Spec, load_config
from qftml.io.json_output import json_safe

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
    from qftml.reweighting.targets import TARGET_KEYS

    cfg = load_config(path, SCHEMA, overrides, comm)
    sc, rw = cfg["scan"], cfg["reweight"]
    if sc["key"] and sc["key"] not in TARGET_KEYS:
        raise ConfigError(f"scan.key = {sc['key']!r}: scannable keys are {', '.join(TARGET_KEYS)}")
    if sc["key"] and not sc["values"] and sc["num"] < 1:
        raise ConfigError("scan.key is set: give scan.values or scan.start/stop/num")
    if sc["values"] and sc["num"]:
        raise ConfigError("give either scan.values or scan.start/stop/num, not both")
    if not rw["ensembles"]:
        raise ConfigError("reweight.ensembles is empty: give at least one ensemble file of S")
    if len(rw["direct"]) != len(rw["direct_values"]):
        raise ConfigError(f"reweight.direct has {len(rw['direct'])} files but direct_values "
                          f"{len(rw['direct_values'])} values")
    if not cfg["output"]["path"]:
        raise ConfigError("output.path is empty")
    return cfg


def _targets(cfg):
    from qftml.reweighting.targets import TargetSpec, scan_targets

    t = dict(cfg["target"])
    spec = TargetSpec(**t)
    sc = cfg["scan"]
    if not sc["key"]:
        return spec, None, [spec]
    values = list(sc["values"]) if sc["values"] else \
        [float(v) for v in np.round(np.linspace(sc["start"], sc["stop"], sc["num"]), 12)]  # no 1e-18 for 0
    return spec, values, scan_targets(spec, sc["key"], values)


def _open_all(paths, therm):
    from qftml.io.ensembles import EnsembleFileError
    from qftml.reweighting.targets import open_ensemble
    from qftml.reweighting.estimator import ReweightError

    out = []
    for p in paths:
        try:
            e = open_ensemble(p)
        except EnsembleFileError as err:
            raise ReweightError(str(err)) from None
        if therm:
            if therm >= e.n_cfg:
                raise ReweightError(f"{p}: reweight.therm = {therm} drops all {e.n_cfg} records")
            e = e.skip(therm)
        out.append(e)
    return out


def _point_kwargs(cfg, inputs):
    rw = cfg["reweight"]
    return dict(replica_lengths=inputs.replica_lengths, ensemble_name=inputs.ensemble_name,
                derived=("chi", "binder", "xi2"), volume=inputs.volume, shape=inputs.shape, n_bins=rw["n_bins"],
                ess_min=rw["ess_min"], phase_sigma=rw["phase_sigma"], gamma_S=rw["gamma_S"])


def run_reweight(cfg, quiet=False, comm=None):
    """The collective part (A - S per configuration) on every rank, the estimator on rank 0."""
    from mpi4py import MPI

    from qftml.reweighting.targets import TargetSpec, compute_inputs
    from qftml.reweighting.estimator import ReweightError, reweight, reweight_scan

    comm = MPI.COMM_WORLD if comm is None else comm
    rw = cfg["reweight"]
    _, values, targets = _targets(cfg)
    ensembles = _open_all(rw["ensembles"], rw["therm"])
    inputs = compute_inputs(ensembles, targets, comm=comm, progress=not quiet)
    direct = []
    for path, x in zip(rw["direct"], rw["direct_values"]):
        d_inputs = compute_inputs(_open_all([path], rw["therm"]), [TargetSpec()], comm=comm)
        if d_inputs.shape != inputs.shape:
            raise ReweightError(f"direct ensemble {path} is on a {d_inputs.shape} lattice, the reweighted "
                                f"ones on {inputs.shape}")
        direct.append((x, path, d_inputs))
    if comm.rank != 0:
        return None, inputs, direct
    key = cfg["scan"]["key"]
    params = [{key: v} for v in values] if values is not None else None
    points = reweight_scan(inputs.deltas, inputs.primaries, params=params, progress=not quiet,
                           **_point_kwargs(cfg, inputs))
    direct_points = []
    for x, path, d in direct:
        # S -> S reweighting is the plain Gamma-method average of the direct ensemble
        p = reweight(d.deltas[0], d.primaries, params={"value": x, "path": path}, **_point_kwargs(cfg, d))
        direct_points.append(p)
    return points, inputs, direct_points


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------

def _fmt(v, e):
    """value(error) with two significant digits of the error."""
    if not (math.isfinite(v) and math.isfinite(e)) or e <= 0:
        return f"{v:.6g}" + ("" if e == 0 else "(?)")
    digits = max(0, 1 - int(math.floor(math.log10(e))))
    return f"{v:.{digits}f}({round(e * 10 ** digits):d})" if digits <= 12 else f"{v:.6g}({e:.2g})"


def _err(est, which):
    return est.error if which == "gamma" else est.error_jackknife


def format_table(cfg, points, inputs) -> str:
    key = cfg["scan"]["key"] or "-"
    names = [n for n in cfg["reweight"]["observables"] if n in points[0].estimates]
    cplx = any(p.complex_valued for p in points)
    which = cfg["reweight"]["errors"]
    head = [key if cfg["scan"]["key"] else "", "ESS", "|phase|" if cplx else "", "flags"] + names
    rows = []
    for p in points:
        x = p.params.get(key, float("nan")) if p.params else float("nan")
        row = [f"{x:.6g}", f"{p.ess:.1f}", _fmt(p.abs_phase, p.abs_phase_error) if cplx else "",
               ",".join(p.flags) or "ok"]
        for n in names:
            e = p.estimates[n]
            v, er = complex(np.asarray(e.value)), complex(np.asarray(_err(e, which)))
            s = _fmt(v.real, er.real)
            if cplx:
                s += (" + " if v.imag >= 0 else " - ") + "i " + _fmt(abs(v.imag), er.imag)
            row.append(s)
        rows.append(row)
    keep = [i for i, h in enumerate(head) if h]
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in keep]
    lines = ["  ".join(head[i].rjust(w) for i, w in zip(keep, widths))]
    lines += ["  ".join(r[i].rjust(w) for i, w in zip(keep, widths)) for r in rows]
    srcs = ", ".join(f"{k}: {v}" for k, v in sorted(inputs.sources.items()))
    rw = cfg["reweight"]
    lines.append(f"# {points[0].n_cfg} configurations of S ({len(inputs.replica_lengths)} replica(s)); "
                 f"A - S from {srcs or 'nothing (A = S)'}; errors: {which}")
    lines.append(f"# flags: low_ess = ESS < {rw['ess_min']:g}" +
                 (f"; phase = |<phase>| < {rw['phase_sigma']:g} sigma" if cplx else "") +
                 ". Flagged points are NOT reliable.")
    return "\n".join(lines)


def _stem(path):
    root, ext = os.path.splitext(path)
    return root if ext in (".h5", ".hdf5") else path


def write_outputs(cfg, points, inputs, direct=()):
    """OUT.h5, OUT.json, OUT.txt and plots (rank 0 only)."""
    import h5py

    out = cfg["output"]["path"]
    stem = _stem(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    key = cfg["scan"]["key"]
    values = [p.params.get(key, np.nan) for p in points] if key else [np.nan] * len(points)
    cplx = any(p.complex_valued for p in points)
    meta = {"config": cfg, "sources": inputs.sources, "replica_lengths": inputs.replica_lengths,
            "shape": list(inputs.shape), "targets": [dataclasses.asdict(t) for t in inputs.targets]}
    with open(stem + ".json", "w") as f:
        json.dump(json_safe({**meta, "scan": {"key": key, "values": values},
                              "points": [p.to_dict() for p in points],
                              "direct": [p.to_dict() for p in direct]}), f, indent=1)
    table = format_table(cfg, points, inputs)
    with open(stem + ".txt", "w") as f:
        f.write(table + "\n")
    with h5py.File(out, "w") as f:
        f.attrs["format"] = "qftml-reweight"
        f.attrs["meta"] = json.dumps(json_safe(meta))
        from qftml import __version__
        f.attrs["package_version"] = __version__
        f["scan/values"] = np.asarray(values, dtype=float)
        f["scan"].attrs["key"] = key
        for name in points[0].estimates:
            g = f.create_group(f"observables/{name}")
            est = [p.estimates[name] for p in points]
            g["value"] = np.array([np.real(e.value) for e in est])
            g["error"] = np.array([np.real(e.error) for e in est])
            g["error_jackknife"] = np.array([np.real(e.error_jackknife) for e in est])
            g["tau_int"] = np.array([np.real(e.tau_int) for e in est])
            if cplx:
                g["value_imag"] = np.array([np.imag(e.value) for e in est])
                g["error_imag"] = np.array([np.imag(e.error) for e in est])
                g["error_jackknife_imag"] = np.array([np.imag(e.error_jackknife) for e in est])
        d = f.create_group("diagnostics")
        d["ess"] = np.array([p.ess for p in points])
        d["n_cfg"] = np.array([p.n_cfg for p in points])
        d["abs_phase"] = np.array([p.abs_phase for p in points])
        d["abs_phase_error"] = np.array([p.abs_phase_error for p in points])
        d["phase"] = np.array([[p.phase.real, p.phase.imag] for p in points])
        d["phase_error"] = np.array([[p.phase_error.real, p.phase_error.imag] for p in points])
        d["log_z_ratio"] = np.array([[p.log_z_ratio.real, p.log_z_ratio.imag] for p in points])
        d["log_z_ratio_error"] = np.array([[p.log_z_ratio_error.real, p.log_z_ratio_error.imag] for p in points])
        d["reliable"] = np.array([p.reliable for p in points])
        d["flag_low_ess"] = np.array(["low_ess" in p.flags for p in points])
        d["flag_phase"] = np.array(["phase" in p.flags for p in points])
        d.attrs["ess_min"] = cfg["reweight"]["ess_min"]
        d.attrs["phase_sigma"] = cfg["reweight"]["phase_sigma"]
    files = [out, stem + ".json", stem + ".txt"]
    if cfg["reweight"]["plot"]:
        files += plot_scan(cfg, points, direct, stem)
    return table, files


def _save(fig, path):
    """Write a finished figure as PNG and release it; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_scan(cfg, points, direct, stem, title=None):
    """PNG plots: observables vs the scanned coupling (bands; flagged points hollow red), diagnostics,
    correlator. Returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = cfg["scan"]["key"]
    which = cfg["reweight"]["errors"]
    files = []
    cplx = any(p.complex_valued for p in points)
    bad = np.array([not p.reliable for p in points])
    if key and len(points) > 1:
        x = np.array([p.params[key] for p in points])
        for name in cfg["reweight"]["observables"]:
            if name not in points[0].estimates or np.ndim(points[0].estimates[name].value):
                continue
            parts = [("Re", np.real), ("Im", np.imag)] if cplx else [("", np.real)]
            fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.8), squeeze=False)
            for ax, (lab, fn) in zip(axes[0], parts):
                v = np.array([fn(complex(np.asarray(p.estimates[name].value))) for p in points])
                e = np.array([fn(complex(np.asarray(_err(p.estimates[name], which)))) for p in points])
                # band over reliable stretches only; flagged points stand alone (their errors mislead)
                ok = ~bad
                ax.fill_between(x, v - e, v + e, where=ok, color="C0", alpha=0.3, lw=0,
                                label=f"reweighted ({which} error)")
                ax.plot(np.where(ok, x, np.nan), np.where(ok, v, np.nan), "-", color="C0", lw=1)
                if ok.any() and bad.any():
                    lo, hi = np.min((v - e)[ok]), np.max((v + e)[ok])
                    for p in direct:
                        dv = fn(complex(np.asarray(p.estimates[name].value)))
                        lo, hi = min(lo, dv), max(hi, dv)
                    pad = 0.5 * (hi - lo) + 1e-12
                    ax.set_ylim(lo - pad, hi + pad)   # flagged points may leave the frame
                ax.plot(x[~bad], v[~bad], "o", color="C0", ms=4)
                if bad.any():
                    ax.errorbar(x[bad], v[bad], e[bad], fmt="o", mfc="white", mec="red", ecolor="red", ms=6,
                                label="flagged: unreliable")
                for p in direct:
                    dv, de = complex(np.asarray(p.estimates[name].value)), complex(np.asarray(p.estimates[name].error))
                    ax.errorbar([p.params["value"]], [fn(dv)], [fn(de)], fmt="s", color="k", ms=5, capsize=3,
                                label="direct simulation" if p is direct[0] else None)
                ax.set_xlabel(key)
                ax.set_ylabel(f"{lab} <{name}>" if lab else f"<{name}>")
                ax.grid(alpha=0.3)
            axes[0][0].legend(fontsize=8)
            fig.suptitle(title or f"<{name}> reweighted along {key}", fontsize=10)
            files.append(_save(fig, f"{stem}_{name}.png"))
        # diagnostics
        fig, axes = plt.subplots(1, 2 if cplx else 1, figsize=(10.4 if cplx else 5.2, 3.8), squeeze=False)
        ess = np.array([p.ess for p in points])
        ax = axes[0][0]
        ax.semilogy(x, ess, "o-", ms=4)
        ax.axhline(cfg["reweight"]["ess_min"], color="red", ls="--", label=f"ess_min = {cfg['reweight']['ess_min']:g}")
        if bad.any():
            ax.plot(x[bad], ess[bad], "o", mfc="white", mec="red", ms=7, label="flagged")
        ax.set_xlabel(key)
        ax.set_ylabel("effective sample size")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        if cplx:
            ax = axes[0][1]
            ph = np.array([p.abs_phase for p in points])
            pe_ = np.array([p.abs_phase_error for p in points])
            ax.errorbar(x, ph, pe_, fmt="o-", ms=4, capsize=2)
            ax.plot(x, cfg["reweight"]["phase_sigma"] * pe_, "r--", label=f"{cfg['reweight']['phase_sigma']:g} sigma")
            if bad.any():
                ax.plot(x[bad], ph[bad], "o", mfc="white", mec="red", ms=7, label="flagged")
            ax.set_yscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel("|<average phase>|")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        files.append(_save(fig, f"{stem}_diagnostics.png"))
    if "corr" in points[0].estimates:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        picks = sorted({0, len(points) // 2, len(points) - 1})
        for i in picks:
            p = points[i]
            c, e = np.real(p.estimates["corr"].value), np.real(_err(p.estimates["corr"], which))
            t = np.arange(len(c))
            lab = ", ".join(f"{k}={v:.4g}" for k, v in p.params.items()) or "target"
            lab += " (flagged)" if p.flags else ""
            ax.errorbar(t, c, e, fmt="o-" if p.reliable else "o--", ms=3, capsize=2, label=lab,
                        mfc=None if p.reliable else "white")
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_ylabel("Re C(t)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        files.append(_save(fig, f"{stem}_corr.png"))
    return files


def run(args) -> int:
    from mpi4py import MPI

    from qftml.reweighting.estimator import ReweightError

    comm = MPI.COMM_WORLD
    cfg = load_reweight_config(args.config, args.overrides, comm)
    error = None
    try:
        points, inputs, direct = run_reweight(cfg, quiet=args.quiet, comm=comm)
        if comm.rank == 0:
            table, files = write_outputs(cfg, points, inputs, direct)
            print(table, flush=True)
            print("wrote " + ", ".join(files), file=sys.stderr, flush=True)
    except (ReweightError, OSError) as e:
        error = str(e)
    # rank 0 alone runs the estimator and writes: every rank learns its verdict
    error = next((e for e in comm.allgather(error) if e), None)
    if error:
        raise ConfigError(error)
    return 0
