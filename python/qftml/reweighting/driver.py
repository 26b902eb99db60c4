"""The `qftml reweight` run: ensembles of S -> target points A, with errors, flags and outputs.

<O>_A = <O e^{-(A-S)}>_S / <e^{-(A-S)}>_S for every target point (qftml.reweighting.estimator); A - S
comes from stored sufficient statistics or, when needed, from each rank's hyperslab of every stored
configuration (qftml.reweighting.targets). Outputs, all from [output] path = OUT.h5:
    OUT.h5     /scan/key, /scan/values, /observables/<name>/{value,error,error_jackknife,tau_int}
               (complex targets: value_imag, error_imag, ... too), /diagnostics/{ess, abs_phase,
               abs_phase_error, phase, log_z_ratio, reliable, flag_low_ess, flag_phase}, attrs
    OUT.json   the same per point, with flags
    OUT.txt    the table printed on rank 0
    OUT_<obs>.png, OUT_diagnostics.png, OUT_corr.png   qftml.plots.reweighting.plot_scan

Exports:
    check_config(cfg)                  cross-key checks beyond the schema (raises ConfigError)
    target_points(cfg) -> (values or None, [TargetSpec])   [target] scanned along [scan]
    ReweightResult                     points, inputs, direct (points and direct are None/[] off rank 0)
    run(cfg, quiet=False, comm=None) -> ReweightResult   collective (collective.failure_policy): A - S
                                       on every rank, the estimator on rank 0
    output_files(cfg) -> [file]        what outputs() writes (checked by config.check_outputs first)
    format_table(cfg, points, inputs) -> str   the table printed on rank 0
    outputs(cfg, result) -> (table, files)     OUT.h5, OUT.json, OUT.txt and the plots (rank 0)
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from qftml.config import ConfigError
from qftml.io.json_output import json_safe, output_stem
from qftml.reweighting.estimator import ReweightError, reweight, reweight_scan
from qftml.reweighting.targets import TARGET_KEYS, TargetSpec, compute_inputs, open_ensembles, scan_targets
from qftml.stats.errors import format_value

DERIVED = ("chi", "binder", "xi2")


def check_config(cfg) -> None:
    """What the schema cannot say: the scan is well defined, ensembles and direct runs are given."""
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


def output_files(cfg) -> list:
    """OUT.h5, OUT.json, OUT.txt and (reweight.plot) the PNGs of the scan."""
    out = cfg["output"]["path"]
    stem = output_stem(out)
    files = [out, stem + ".json", stem + ".txt"]
    if cfg["reweight"]["plot"]:
        files += [f"{stem}_{name}.png" for name in (*cfg["reweight"]["observables"], "diagnostics", "corr")]
    return files


def target_points(cfg):
    """(scanned values or None, one TargetSpec per point)."""
    spec = TargetSpec(**cfg["target"])
    sc = cfg["scan"]
    if not sc["key"]:
        return None, [spec]
    values = list(sc["values"]) if sc["values"] else \
        [float(v) for v in np.round(np.linspace(sc["start"], sc["stop"], sc["num"]), 12)]  # no 1e-18 for 0
    return values, scan_targets(spec, sc["key"], values)


@dataclasses.dataclass
class ReweightResult:
    points: list | None     # ReweightPoint per target (rank 0)
    inputs: object          # targets.ReweightInputs of the reweighted ensembles
    direct: list            # ReweightPoint per direct ensemble, params {"value", "path"} (rank 0)


def _point_kwargs(cfg, inputs):
    rw = cfg["reweight"]
    return dict(replica_lengths=inputs.replica_lengths, ensemble_name=inputs.ensemble_name, derived=DERIVED,
                volume=inputs.volume, shape=inputs.shape, n_bins=rw["n_bins"], ess_min=rw["ess_min"],
                phase_sigma=rw["phase_sigma"], gamma_S=rw["gamma_S"])


def _inputs(paths, therm, targets, comm, quiet, progress=False):
    ensembles = open_ensembles(paths, therm)
    try:
        return compute_inputs(ensembles, targets, comm=comm, progress=progress, quiet=quiet)
    finally:
        for e in ensembles:
            e.close()


def run(cfg, quiet=False, comm=None) -> ReweightResult:
    """A - S per configuration on every rank (collective), the estimator on rank 0 of `comm`."""
    from mpi4py import MPI

    from qftml.collective import failure_policy

    comm = MPI.COMM_WORLD if comm is None else comm
    with failure_policy(comm):
        return _run(cfg, quiet, comm)


def _run(cfg, quiet, comm) -> ReweightResult:
    rw = cfg["reweight"]
    values, targets = target_points(cfg)
    inputs = _inputs(rw["ensembles"], rw["therm"], targets, comm, quiet, progress=True)
    direct = []
    for path, x in zip(rw["direct"], rw["direct_values"]):
        d = _inputs([path], rw["therm"], [TargetSpec()], comm, quiet)
        if d.shape != inputs.shape:
            raise ReweightError(f"direct ensemble {path} is on a {d.shape} lattice, the reweighted "
                                f"ones on {inputs.shape}")
        direct.append((x, path, d))
    if comm.rank != 0:
        return ReweightResult(None, inputs, [])
    key = cfg["scan"]["key"]
    params = [{key: v} for v in values] if values is not None else None
    points = reweight_scan(inputs.deltas, inputs.primaries, params=params, progress=True, quiet=quiet,
                           **_point_kwargs(cfg, inputs))
    # S -> S reweighting is the plain Gamma-method average of the direct ensemble
    direct_points = [reweight(d.deltas[0], d.primaries, params={"value": x, "path": path}, **_point_kwargs(cfg, d))
                     for x, path, d in direct]
    return ReweightResult(points, inputs, direct_points)


# ---------------------------------------------------------------------------------------------
# outputs (rank 0)
# ---------------------------------------------------------------------------------------------

def _error(est, which):
    return est.error if which == "gamma" else est.error_jackknife


def _cell(est, which, cplx):
    v, er = complex(np.asarray(est.value)), complex(np.asarray(_error(est, which)))
    s = format_value(v.real, er.real)
    if cplx:
        s += (" + " if v.imag >= 0 else " - ") + "i " + format_value(abs(v.imag), er.imag)
    return s


def format_table(cfg, points, inputs) -> str:
    """One row per point: the scanned value, ESS, |phase| (complex targets), flags, observables."""
    key = cfg["scan"]["key"] or "-"
    names = [n for n in cfg["reweight"]["observables"] if n in points[0].estimates]
    cplx = any(p.complex_valued for p in points)
    which = cfg["reweight"]["errors"]
    head = [key if cfg["scan"]["key"] else "", "ESS", "|phase|" if cplx else "", "flags"] + names
    rows = []
    for p in points:
        x = p.params.get(key, float("nan")) if p.params else float("nan")
        rows.append([f"{x:.6g}", f"{p.ess:.1f}", format_value(p.abs_phase, p.abs_phase_error) if cplx else "",
                     ",".join(p.flags) or "ok"] + [_cell(p.estimates[n], which, cplx) for n in names])
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


def _write_h5(path, cfg, points, meta, values, key):
    import h5py

    from qftml import __version__

    cplx = any(p.complex_valued for p in points)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "qftml-reweight"
        f.attrs["meta"] = json.dumps(json_safe(meta))
        f.attrs["package_version"] = __version__
        f["scan/values"] = np.asarray(values, dtype=float)
        f["scan"].attrs["key"] = key
        for name in points[0].estimates:
            g = f.create_group(f"observables/{name}")
            est = [p.estimates[name] for p in points]
            parts = [("", np.real)] + ([("_imag", np.imag)] if cplx else [])
            for suffix, fn in parts:
                g["value" + suffix] = np.array([fn(e.value) for e in est])
                g["error" + suffix] = np.array([fn(e.error) for e in est])
                g["error_jackknife" + suffix] = np.array([fn(e.error_jackknife) for e in est])
                if not suffix:
                    g["tau_int"] = np.array([np.real(e.tau_int) for e in est])
        d = f.create_group("diagnostics")
        for name in ("ess", "n_cfg", "abs_phase", "abs_phase_error", "reliable"):
            d[name] = np.array([getattr(p, name) for p in points])
        for name in ("phase", "phase_error", "log_z_ratio", "log_z_ratio_error"):
            d[name] = np.array([[getattr(p, name).real, getattr(p, name).imag] for p in points])
        d["flag_low_ess"] = np.array(["low_ess" in p.flags for p in points])
        d["flag_phase"] = np.array(["phase" in p.flags for p in points])
        d.attrs["ess_min"] = cfg["reweight"]["ess_min"]
        d.attrs["phase_sigma"] = cfg["reweight"]["phase_sigma"]


def outputs(cfg, result: ReweightResult):
    """Write OUT.json, OUT.txt, OUT.h5 and (reweight.plot) the PNGs; returns (table, files)."""
    points, inputs, direct = result.points, result.inputs, result.direct
    out = cfg["output"]["path"]
    stem = output_stem(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    key = cfg["scan"]["key"]
    values = [p.params.get(key, np.nan) for p in points] if key else [np.nan] * len(points)
    meta = {"config": cfg, "sources": inputs.sources, "replica_lengths": inputs.replica_lengths,
            "shape": list(inputs.shape), "targets": [dataclasses.asdict(t) for t in inputs.targets]}
    with open(stem + ".json", "w") as f:
        json.dump(json_safe({**meta, "scan": {"key": key, "values": values},
                             "points": [p.to_dict() for p in points],
                             "direct": [p.to_dict() for p in direct]}), f, indent=1)
    table = format_table(cfg, points, inputs)
    with open(stem + ".txt", "w") as f:
        f.write(table + "\n")
    _write_h5(out, cfg, points, meta, values, key)
    files = [out, stem + ".json", stem + ".txt"]
    rw = cfg["reweight"]
    if rw["plot"]:
        from qftml.plots.reweighting import plot_scan

        files += plot_scan(points, direct, stem, key, rw["observables"], errors=rw["errors"],
                           ess_min=rw["ess_min"], phase_sigma=rw["phase_sigma"])
    return table, files
