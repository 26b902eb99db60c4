"""The inverse-RG pipeline of `qftml irg` (DESIGN 1.7, docs/irg.md), collective over one communicator.

Steps (the process grid of [lattice] is kept at every size):
 1. direct Markov-chain ensembles at L/b and L ([lattice] shape = L, [action], [sampler]; size L on the
    stream derive_seed(sampler.seed, "direct_chain", L)) by the
    owner of ensemble generation (qftml.ensemble_generation.run_sample, one chain per rank on
    COMM_SELF, the chains side by side), written as ordinary ensemble files <stem>_direct_L<n>.h5
    with checkpoints every sampler.checkpoint_every sweeps (resume=True continues every chain that
    has a checkpoint; SIGTERM/SIGUSR1 checkpoint and raise Preempted); or read from
    irg.small_ensemble / irg.ensemble; irg.extra_pairs = n adds L/b^2, ..., L/b^(1+n);
 2. Binder crossing of L/b and L (reweighting in mu2) -> mu2_c; mu2* = mu2_c or irg.mu2_critical
    (irg.critical); field rescaling zeta of R_b ("match": zeta^2 = <m^2>_{L/b} / <m^2>_L at mu2*,
    so the blocked L ensemble has the magnetisation scale of the L/b ensemble; "fixed": irg.zeta);
 3. training of the transposed convolution on the L ensemble (qftml.rg.inverse), weights saved;
 4. upscaling of irg.upscale_configs configurations of the L ensemble through irg.levels steps
    L -> bL -> ... -> b^k L (irg.method = "refined": every step followed by irg.refine_sweeps
    block-constrained sweeps and irg.relax_sweeps unconstrained local + cluster sweeps, qftml.rg.refine;
    the L/b -> L step of the flow alike), each level an ordinary ensemble file <stem>_L<n>.h5 (/configs stored
    while n_cfg * volume * 8 bytes <= irg.store_max_mb, else observables only, plus
    <stem>_L<n>_snapshot.h5 with the first irg.snapshot configurations); observables by the
    engine (qftml.measure with the homogeneous [action] as a label);
 5. critical exponents (qftml.stats.finite_size, jackknife of qftml.stats.errors): gamma/nu,
    beta/nu from FSS fits over the upscaled sizes at mu2*, nu from the flow mu2 -> mu2' of
    Binder-cumulant matching between the upscaled L/b ensemble and the direct L ensemble; direct
    two-size FSS for comparison; every pair of neighbouring direct sizes by pair_analysis;
 6. the results file ([output] path, write_results).
The pipeline is for the homogeneous real theory: action.field = "ising", action.extra, action.g
and action.couplings are configuration errors.

Exports:
    IRG, SCHEMA                 the [irg] section and the whole schema (lattice, action, sampler, irg, output)
    load_irg_config(path, overrides=(), comm=None) -> dict   validated (ConfigError: exit status 2)
    check_irg_config(cfg, comm) -> InverseRG                 what the pipeline cannot do -> ConfigError
    make_refiner(cfg, lattice) -> Refiner | None             the refinement of [irg] on a fine lattice
    irg_outputs(cfg) -> [file]                               every file it writes (config.check_outputs)
    Exponent(name, method, value, error, exact)              one row of the exponent table
    IrgResult                   exponents, pairs, levels, flow, timings, paths, the scalars of the
                                analysis, tau_int, and (not in the file) the trained model and the
                                per-configuration series the plots use
    run_irg(cfg, comm=None, quiet=False, resume=False, log=None) -> IrgResult   (collective, failure_policy)
    write_results(path, result, cfg)                         the results file (HDF5, rank 0 only)
    Preempted                   a direct chain stopped by a signal after its checkpoint (exit status 3)
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from qftml.collective import failure_policy, on_root
from qftml.config import (ACTION, LATTICE, OUTPUT, SAMPLER, SEED_MAX, ConfigError, Spec, check_outputs, check_sweeps,
                          load_config)
from qftml.io.json_output import output_stem
from qftml.stats import finite_size as fs
from qftml.stats.errors import jackknife, tau_int

IRG = {
    "b": Spec("int", 2, min=2, help="blocking factor / stride"),
    "levels": Spec("int", 3, min=1, help="upscaling steps k: L -> b^k L"),
    "filter_size": Spec("int", 6, min=2,
                        help="filter extent per direction (b=2: 2, 6, 10 keep the zero-mode gain exact)"),
    "filters": Spec("int", 1, min=1, help="number of filters (> 1 needs activation = 'tanh')"),
    "activation": Spec("str", "linear", choices=("linear", "tanh")),
    "noise": Spec("bool", True, help="add fitted noise in the kernel of the block average"),
    "rescale": Spec("str", "match", choices=("match", "fixed"), help="field rescaling zeta of R_b"),
    "zeta": Spec("float", 1.0, min=0.0, min_exclusive=True, help="zeta for rescale = 'fixed'"),
    "critical": Spec("str", "crossing", choices=("crossing", "value"),
                     help="coupling of zeta and the FSS fits: the L/b-L Binder crossing or irg.mu2_critical"),
    "mu2_critical": Spec("float", -0.9515, help="critical mu2 for critical = 'value' (the seed's estimate)"),
    "obs_weight": Spec("float", 0.0, min=0.0, help="weight of the <phi^2> matching term in the loss"),
    "epochs": Spec("int", 2000, min=1, help="Adam steps (tanh or obs_weight > 0)"),
    "lr": Spec("float", 0.01, min=0.0, min_exclusive=True),
    "upscale_configs": Spec("int", 32, min=1, help="configurations of the L ensemble carried to b^k L"),
    "store_max_mb": Spec("float", 256.0, min=0.0, help="store /configs of a level up to this size"),
    "snapshot": Spec("int", 1, min=0, help="configurations in the snapshot file of unstored levels"),
    "seed": Spec("int", 1, min=0, max=SEED_MAX, help="seed of the upscaling noise"),
    "n_bins": Spec("int", 20, min=2, help="jackknife bins"),
    "ess_fraction": Spec("float", 0.3, min=0.0, help="reweighting window: ESS >= fraction * N"),
    "ensemble": Spec("str", "", help="existing ensemble file at L (default: sample it)"),
    "small_ensemble": Spec("str", "", help="existing ensemble file at L/b (default: sample it)"),
    "extra_pairs": Spec("int", 0, min=0, help="also sample L/b^2 ... L/b^(1+n) directly and report every pair of "
                                              "neighbouring sizes (crossing, U there, nu, gamma/nu): the drift with L"),
    "plots": Spec("bool", True),
    "method": Spec("str", "linear", choices=("linear", "refined"),
                   help="'refined': after every inverse step block-constrained sweeps (the fine theory's "
                        "conditional given the block field), then relax_sweeps unconstrained local + cluster sweeps"),
    "refine_sweeps": Spec("int", 20, min=0, help="block-constrained sweeps per level (method = 'refined')"),
    "refine_step": Spec("float", 1.0, min=0.0, min_exclusive=True, help="pair-move displacement of the refinement"),
    "relax_sweeps": Spec("int", 0, min=0, help="unconstrained sweeps per level after the constrained ones "
                                              "(sampler.hits, sampler.step, sampler.cluster, sampler.cluster_every)"),
    "relax_chain": Spec("bool", True, help="carry the relaxed configuration to the next level (true) or the "
                                           "constrained one, relaxing a copy for the level's output (false)"),
}
SCHEMA = {"lattice": LATTICE, "action": ACTION, "sampler": SAMPLER, "irg": IRG, "output": OUTPUT}
HOMOGENEOUS = ("kappa", "mu2", "lam", "h")
FLOW_LEVEL = 99        # noise counter "level" of the one upscaling step L/b -> L used for the flow


class Preempted(RuntimeError):
    """A direct chain was stopped by SIGTERM/SIGUSR1 after writing its checkpoint."""


@dataclass
class Exponent:
    name: str
    method: str
    value: float
    error: float
    exact: float


@dataclass
class IrgResult:
    exponents: list            # [Exponent]
    pairs: list                # finite_size.pair_analysis dicts, smallest pair first
    levels: dict               # L (sizes), per_level {k: {abs_m, m2, m4, sum_phi2_src}}, files, stored, snapshots, n
    flow: dict                 # mu2, mu2_prime, slope, dslope
    timings: dict
    paths: dict                # results, weights, direct {L: file}
    mu2_c: float
    dmu2_c: float
    mu2_star: float
    window: float              # reweighting window +- around action.mu2 (both main ensembles)
    zeta: float
    dzeta: float
    gain: float                # zero-mode gain s of the linear model (NaN for tanh)
    train_mse: float
    noise_sigma: float
    zero_mode_check: float     # max |m_k / (s^k m_0) - 1| over carried configurations and levels
    tau_int: dict              # {"L<n>": (tau, dtau)} of |m|, stored configurations
    model: object = field(default=None, repr=False)      # the trained InverseRG
    series: dict = field(default_factory=dict, repr=False)   # small, large, small_up, smaller (fs.Series)


def check_irg_config(cfg, comm):
    """The model of [irg], after checking what the pipeline needs; ConfigError (every rank) otherwise."""
    import qftml
    from qftml.ensemble_generation import build_action
    from qftml.rg.blocking import check_blockable
    from qftml.rg.inverse import InverseRG

    act, irg = cfg["action"], cfg["irg"]
    shape = tuple(cfg["lattice"]["shape"])
    b = irg["b"]
    if act["field"] != "real":
        raise ConfigError("irg: the critical-exponent pipeline needs action.field = 'real' "
                          "(R_b for ising is qftml.rg.blocking.block_local(field='ising'))")
    for key, default in (("couplings", ""), ("extra", ""), ("g", 0.0)):
        if act[key] != default:
            raise ConfigError(f"irg: action.{key} = {act[key]!r} is not supported: the inverse-RG pipeline is for "
                              f"the homogeneous theory ({', '.join('action.' + k for k in HOMOGENEOUS)})")
    if len(set(shape)) != 1:
        raise ConfigError(f"irg: lattice.shape = {list(shape)} must be a hypercube (FSS in one L)")
    if not (irg["ensemble"] and irg["small_ensemble"]):
        check_sweeps(cfg["sampler"])  # the direct chains are `qftml sample` runs
    for key in ("ensemble", "small_ensemble"):
        if irg[key] and not os.path.isfile(irg[key]):
            raise ConfigError(f"irg.{key} = {irg[key]!r}: no such file")
    probe = qftml.Lattice(shape, comm=comm, grid=cfg["lattice"]["grid"] or None)
    try:  # the action must be usable before any chain runs or any file is written
        build_action(cfg, probe)
    except ConfigError:
        raise
    except ValueError as e:
        raise ConfigError(f"irg: [action]: {e}") from None
    # L / b must still split over the same grid, and training blocks L once: L / grid divisible by b^2
    try:
        check_blockable(shape, probe.grid, b, levels=2)
    except ValueError as e:
        raise ConfigError(f"irg: {e} (the L/b ensemble must live on the same process grid)") from None
    model = InverseRG(b=b, size=irg["filter_size"], filters=irg["filters"], ndim=len(shape),
                      activation=irg["activation"], noise=irg["noise"])
    if model.ghost_width > min(probe.local_shape) // b:
        raise ConfigError(f"irg: filter_size = {irg['filter_size']} needs {model.ghost_width} ghost layer(s) but the "
                          f"local block of the L/b lattice is {min(probe.local_shape) // b} site(s) wide")
    n_extra = irg["extra_pairs"]
    if n_extra and (shape[0] % b ** (1 + n_extra) or shape[0] // b ** (1 + n_extra) < 4):
        raise ConfigError(f"irg: extra_pairs = {n_extra} needs L / b^{1 + n_extra} >= 4 and integer "
                          f"(L = {shape[0]}, b = {b})")
    return model


def irg_outputs(cfg) -> list:
    """Every file `qftml irg` writes: direct ensembles (and their checkpoints) it samples, the weights,
    the level ensembles and snapshots, the results file, the plots (irg.plots)."""
    from qftml.io.checkpoints import checkpoint_path

    irg, out = cfg["irg"], cfg["output"]
    L, b = cfg["lattice"]["shape"][0], irg["b"]
    stem = output_stem(out["path"])
    direct = [L // b ** j for j in range(2 + irg["extra_pairs"])]
    if irg["ensemble"]:
        direct.remove(L)
    if irg["small_ensemble"]:
        direct.remove(L // b)
    files = [f"{stem}_direct_L{n}.h5" for n in direct]
    files += [checkpoint_path(p) for p in files] + [f"{stem}_weights.h5"]
    for k in range(1, irg["levels"] + 1):
        files += [f"{stem}_L{L * b ** k}.h5", f"{stem}_L{L * b ** k}_snapshot.h5"]
    files.append(out["path"])
    if irg["plots"]:
        files += [f"{stem}_{name}.png" for name in ("configs", "fss", "flow")]
    return files


def load_irg_config(path, overrides=(), comm=None) -> dict:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    cfg = load_config(path, SCHEMA, overrides, comm)
    check_irg_config(cfg, comm)
    return cfg


# ---------------------------------------------------------------- 1. direct ensembles
def _direct_chains(cfg, jobs, comm, quiet, resume):
    """Run the chains [(shape, path)] with run_sample, job i on rank i mod size (COMM_SELF)."""
    from mpi4py import MPI

    from qftml.engine.rng import derive_seed
    from qftml.ensemble_generation import EXIT_OK, EXIT_PREEMPTED, run_sample
    from qftml.io.checkpoints import checkpoint_path

    error, stopped = None, None
    for i, (shape, path) in enumerate(jobs):
        if i % comm.size != comm.rank:
            continue
        sampler = dict(cfg["sampler"], seed=derive_seed(cfg["sampler"]["seed"], "direct_chain", int(shape[0])))
        chain_cfg = {"lattice": {"shape": list(shape), "grid": []}, "action": dict(cfg["action"]),
                     "sampler": sampler,
                     "output": {"path": path, "configs": True, "overwrite": True, "batch": 0}}
        try:
            code = run_sample(chain_cfg, resume=resume and os.path.exists(checkpoint_path(path)), quiet=quiet,
                              comm=MPI.COMM_SELF)
        except Exception as e:  # reported on every rank below: no rank may wait for a failed one
            error = f"direct chain L={shape[0]} ({path}): {e}"
            break
        if code != EXIT_OK:
            stopped = path if code == EXIT_PREEMPTED else None
            error = None if stopped else f"direct chain L={shape[0]} ({path}): exit status {code}"
            break
        print(f"  direct L={shape[0]} (rank {comm.rank}): {cfg['sampler']['sweeps']} sweeps -> {path}", flush=True)
    outcomes = comm.allgather((error, stopped))
    errors = [e for e, _ in outcomes if e]
    if errors:
        raise ValueError(f"irg: {errors[0]}")
    stopped = [s for _, s in outcomes if s]
    if stopped:
        raise Preempted(f"irg: direct chain(s) {', '.join(stopped)} stopped by a signal after a checkpoint; "
                        f"continue with --resume")


def _read_direct(path, grid, comm):
    """(lattice on the grid, this rank's blocks of /configs, observables, attributes) of an ensemble file."""
    import qftml
    from qftml.io.ensembles import open_ensemble

    with open_ensemble(path) as ens:
        lat = qftml.Lattice(ens.shape, comm=comm, grid=grid or None)
        if not ens.has_configs:
            raise ValueError(f"{path}: has no /configs; the inverse RG needs configurations")
        local = np.asarray(ens.configs[(slice(0, ens.n_records),) + lat.local_slices])
        return lat, local, dict(ens.observables), ens.attrs


def _check_source_action(path, attrs, act):
    """Reweighting starts from [action]: an ensemble of other couplings would be silently wrong."""
    theirs = attrs.get("action", {}) if isinstance(attrs.get("action"), dict) else {}
    bad = [f"{k} = {theirs[k]} (config: {act[k]})" for k in HOMOGENEOUS
           if k in theirs and abs(float(theirs[k]) - float(act[k])) > 1e-12]
    if theirs.get("couplings") or bad:
        raise ValueError(f"irg: {path} was not sampled with the [action] of this config: "
                         f"{', '.join(bad) or 'inhomogeneous couplings'}")


# ---------------------------------------------------------------- estimators (jackknife functions of idx)
def _crossing(idx, small, large, mu2_0, window):
    return fs.binder_crossing(small, large, mu2_0, window, idx)


def _zeta(idx, small, large, mu2_0, where):
    ms = fs.moments(small, where - mu2_0, idx[0])["m2"]
    ml = fs.moments(large, where - mu2_0, idx[1])["m2"]
    return np.sqrt(ms / ml)


def _exponents(idx, small, large, mu2_0, mu2_star, mu2_c, zeta, gain, match, b, d, levels):
    """gamma/nu, beta/nu from the upscaled sizes at mu2*; the zero-mode gain moves with zeta (linear
    MSE filter: s scales as 1 / zeta exactly). Then the direct two-size FSS at mu2* and at mu2_c."""
    Ls = np.array([large.L * b ** k for k in range(levels + 1)], dtype=float)
    z = _zeta(idx, small, large, mu2_0, mu2_star) if match else zeta
    s = gain * zeta / z
    mom = fs.moments(large, mu2_star - mu2_0, idx[1])
    chi = [mom["chi"] * (b ** d * s * s) ** k for k in range(levels + 1)]
    am = [mom["abs_m"] * s ** k for k in range(levels + 1)]
    out = [fs.fss_slope(Ls, chi), -fs.fss_slope(Ls, am)]
    for where in (mu2_star, mu2_c):
        ml = fs.moments(large, where - mu2_0, idx[1])
        ms = fs.moments(small, where - mu2_0, idx[0])
        out += [np.log(ml["chi"] / ms["chi"]) / np.log(b), -np.log(ml["abs_m"] / ms["abs_m"]) / np.log(b)]
    return out


def _measured_exponents(idx, level_series, Ls, shift):
    """The same fits on the measured upscaled ensembles (jackknife bins shared by every level)."""
    moms = [fs.moments(s, shift, idx[0]) for s in level_series]
    return [fs.fss_slope(Ls, [m["chi"] for m in moms]), -fs.fss_slope(Ls, [m["abs_m"] for m in moms])]


def _flow_nu(idx, small_up, large, mu2_grid, window_large, b):
    lam = fs.flow_slope(small_up, large, mu2_grid, window_large, idx)
    return [lam, np.log(b) / np.log(1.0 / lam) if 0 < lam < 1 else np.nan]


# ---------------------------------------------------------------- 4. upscaling
def _level_attrs(lat, act, irg, model, k, source_L, gain, zeta, weights_path, start_time):
    import qftml

    return {"action": {**act, "note": "couplings of the source ensemble; configurations come from the inverse RG"},
            "lattice": {"shape": list(lat.shape), "grid": list(lat.grid)},
            "sampler": {"algorithm": "inverse-rg", "method": irg["method"], "refine_sweeps": irg["refine_sweeps"],
                        "relax_sweeps": irg["relax_sweeps"], "refine_step": irg["refine_step"], "level": k,
                        "b": irg["b"], "gain": gain, "zeta": zeta,
                        "filter_size": model.size, "source_L": source_L, "weights": weights_path},
            "seed": int(irg["seed"]), "process_grid": list(lat.grid), "n_ranks": int(lat.size),
            "package_version": qftml.__version__, "start_time": start_time, "irg_level": k}


class _LevelFiles:
    """The ensemble file of every level (and a snapshot file where /configs would be too large)."""

    def __init__(self, lats, measures, n_up, cfg, model, stem, weights_path, gain, zeta, comm):
        from qftml.io.ensembles import EnsembleWriter, observable_layout
        from qftml.progress import utc_now

        irg, act = cfg["irg"], cfg["action"]
        start_time = comm.bcast(utc_now(), root=0)
        self.writers, self.snaps, self.files, self.stored, self.snapshots = [], [], [], [], []
        self.n_snapshot, self.comm = irg["snapshot"], comm
        for k in range(1, len(lats)):
            lat = lats[k]
            store = n_up * lat.volume * 8 <= irg["store_max_mb"] * 2 ** 20
            layout = observable_layout(lat, measures[k].action)
            attrs = _level_attrs(lat, act, irg, model, k, lats[0].shape[0], gain, zeta, weights_path, start_time)
            path = f"{stem}_L{lat.shape[0]}.h5"
            self.writers.append((EnsembleWriter.create(path, lat, attrs, layout, couplings={}, store_configs=store),
                                 layout))
            snap = None
            if not store and self.n_snapshot > 0:
                snap = (EnsembleWriter.create(f"{stem}_L{lat.shape[0]}_snapshot.h5", lat, attrs, layout, couplings={},
                                              store_configs=True), layout)
            self.snaps.append(snap)
            self.files.append(path)
            self.stored.append(bool(store))
            self.snapshots.append(snap is not None)

    def append(self, k, i, x, record):
        """Configuration number i (in carrying order) at level k >= 1: blocks x (1, *local), its record."""
        from qftml.io.ensembles import stack_observables

        w, layout = self.writers[k - 1]
        w.append(x if w.store_configs else None, stack_observables([record], layout))
        if self.snaps[k - 1] is not None and i < self.n_snapshot:
            self.snaps[k - 1][0].append(x, stack_observables([record], self.snaps[k - 1][1]))

    def close(self):
        from qftml.progress import utc_now

        end_time = self.comm.bcast(utc_now(), root=0)
        for w, _ in self.writers:
            w.set_attrs(complete=True, end_time=end_time)
            w.close()
        for s in self.snaps:
            if s is not None:
                s[0].set_attrs(complete=True)
                s[0].close()


def make_refiner(cfg, lattice):
    """The refinement of [irg] on the fine `lattice` (qftml.rg.refine.Refiner), None for method = 'linear'."""
    from qftml.rg.refine import Refiner

    irg, smp = cfg["irg"], cfg["sampler"]
    if irg["method"] != "refined":
        return None
    cluster = smp["cluster"] if smp["cluster"] != "wolff" or lattice.size == 1 else "swendsen-wang"
    return Refiner(lattice, irg["b"], **{k: cfg["action"][k] for k in HOMOGENEOUS}, constrained=irg["refine_sweeps"],
                   relax=irg["relax_sweeps"], step=irg["refine_step"], hits=smp["hits"], cluster=cluster,
                   cluster_every=smp["cluster_every"], seed=irg["seed"], relax_step=smp["step"])


def _refine_level(refiner, local, config, level, relax_chain):
    """(output of the level, configuration carried on) after the refinement of one configuration: with
    relax_chain both are the relaxed one; otherwise the constrained one is carried on (block field, and so
    every long-wavelength mode, inherited exactly) and a relaxed copy is the level's output."""
    if relax_chain or not refiner.relax:
        y = refiner.refine(local, config, level)[None]
        return y, y
    relax, refiner.relax = refiner.relax, 0
    try:
        kept = refiner.refine(local, config, level)
    finally:
        refiner.relax = relax
    return refiner.relax_sweeps(kept, relax, config, level)[None], kept[None]


def _upscale_chain(model, lat_l, cfg_l, obs_l, cfg, stem, weights_path, quiet, comm, zeta, gain, log):
    """Carry irg.upscale_configs configurations of the L ensemble through all levels; write each level."""
    from qftml.progress import Progress
    from qftml.rg.inverse import ConfigurationMeasure, fine_lattice

    irg, act = cfg["irg"], cfg["action"]
    levels = irg["levels"]
    n_total = cfg_l.shape[0]
    n_up = min(irg["upscale_configs"], n_total)
    pick = np.linspace(0, n_total - 1, n_up).astype(int)
    lats = [lat_l]
    for _ in range(levels):
        lats.append(fine_lattice(lats[-1], irg["b"]))
    measures = [None] + [ConfigurationMeasure(lat, **{k: act[k] for k in HOMOGENEOUS}) for lat in lats[1:]]
    refiners = [None] + [make_refiner(cfg, lat) for lat in lats[1:]]
    files = _LevelFiles(lats, measures, n_up, cfg, model, stem, weights_path, gain, zeta, comm)
    per_level = {k: {"abs_m": [], "m2": [], "m4": [], "sum_phi2_src": []} for k in range(levels + 1)}
    ratio_dev = 0.0
    with Progress(n_up, "upscale", unit="config", comm=comm, quiet=quiet, leave=False) as bar:
        for i, src in enumerate(pick):
            x = cfg_l[src][None]
            m0 = obs_l["m"][src]
            for key in ("abs_m", "m2", "m4"):
                per_level[0][key].append(obs_l[key][src])
            per_level[0]["sum_phi2_src"].append(obs_l["sum_phi2"][src])
            for k in range(1, levels + 1):
                _, x = model.upscale(lats[k - 1], x, seed=irg["seed"], first_config=int(src), level=k, fine=lats[k])
                out = x
                if refiners[k] is not None:
                    out, x = _refine_level(refiners[k], x[0], int(src), k, irg["relax_chain"])
                o = measures[k](out[0])
                o["sweep"] = int(obs_l["sweep"][src]) if "sweep" in obs_l else int(src)
                if np.isfinite(gain) and m0 != 0:
                    ratio_dev = max(ratio_dev, abs(o["m"] / (m0 * gain ** k) - 1.0))
                for key in ("abs_m", "m2", "m4"):
                    per_level[k][key].append(o[key])
                per_level[k]["sum_phi2_src"].append(obs_l["sum_phi2"][src])
                files.append(k, i, out, o)
            bar.update()
    files.close()
    for path, store, snap, lat in zip(files.files, files.stored, files.snapshots, lats[1:]):
        log(f"  level L={lat.shape[0]}: {n_up} configs -> {path}" + ("" if store else " (observables only)")
            + (" + snapshot" if snap else ""))
    if np.isfinite(gain):
        log(f"  check: max |m_k / (s^k m_0) - 1| over configs and levels = {ratio_dev:.2e}")
    else:  # unconstrained sweeps move m: there is no gain to check against (the file records NaN)
        ratio_dev = float("nan")
    for lat, ref in zip(lats[1:], refiners[1:]):
        if ref is not None:
            log(f"  refinement L={lat.shape[0]}: {ref.constrained} constrained sweeps (acceptance "
                f"{ref.acceptance:.3f}), {ref.relax} unconstrained sweeps")
    return {"L": np.array([lat.shape[0] for lat in lats], dtype=float), "n": n_up, "pick": pick,
            "per_level": {k: {q: np.array(v) for q, v in dd.items()} for k, dd in per_level.items()},
            "files": files.files, "stored": files.stored, "snapshots": files.snapshots, "ratio_dev": ratio_dev}


def _flow_series(model, lat_s, cfg_s, obs_s, act, seed, L, refiner=None):
    """One upscaling step of the whole L/b ensemble (refined if `refiner`), measured at L: U_up(mu2) for
    the flow. Reweighting variable: the source's sum phi^2 (the upscaled ensemble is labelled by its source)."""
    from qftml.rg.inverse import ConfigurationMeasure

    fine, up_small = model.upscale(lat_s, cfg_s, seed=seed, first_config=0, level=FLOW_LEVEL)
    if refiner is not None:
        up_small = np.stack([refiner.refine(c, i, FLOW_LEVEL) for i, c in enumerate(up_small)])
    measure = ConfigurationMeasure(fine, **{k: act[k] for k in HOMOGENEOUS})
    obs = {k: [] for k in ("abs_m", "m2", "m4")}
    for c in up_small:
        o = measure(c)
        for k in obs:
            obs[k].append(o[k])
    obs["sum_phi2"] = obs_s["sum_phi2"]
    return fs.Series("upscaled L/b -> L", obs, fine.volume, L, act["mu2"])


# ---------------------------------------------------------------- the pipeline
def _rank0_log(comm):
    def log(msg):
        if comm.rank == 0:        # --quiet silences the progress bars, not the report
            print(msg, flush=True)
    return log


@dataclass
class _Direct:
    """The direct ensembles: blocks and observables at L/b and L, the series of every size, files."""
    lat_s: object
    cfg_s: np.ndarray
    obs_s: dict
    lat_l: object
    cfg_l: np.ndarray
    obs_l: dict
    ladder: list               # fs.Series of every direct size, smallest first (..., L/b, L)
    paths: dict                # {L: file}

    small = property(lambda self: self.ladder[-2])
    large = property(lambda self: self.ladder[-1])


def _direct_stage(cfg, comm, stem, quiet, resume) -> _Direct:
    from qftml.io.ensembles import read_attrs, read_observables

    shape, grid, irg, act = tuple(cfg["lattice"]["shape"]), cfg["lattice"]["grid"], cfg["irg"], cfg["action"]
    b, L, mu2_0 = irg["b"], shape[0], act["mu2"]
    small_shape = tuple(n // b for n in shape)
    path_s = irg["small_ensemble"] or f"{stem}_direct_L{L // b}.h5"
    path_l = irg["ensemble"] or f"{stem}_direct_L{L}.h5"
    # extra_pairs: direct chains at L/b^2, ..., L/b^(1+n) (observables only enter the analysis)
    extra = [(tuple(n // b ** j for n in shape), f"{stem}_direct_L{L // b ** j}.h5")
             for j in range(1 + irg["extra_pairs"], 1, -1)]
    jobs = [(small_shape, path_s)] * (not irg["small_ensemble"]) + [(shape, path_l)] * (not irg["ensemble"])
    _direct_chains(cfg, jobs + extra[::-1], comm, quiet, resume)
    lat_s, cfg_s, obs_s, attrs_s = _read_direct(path_s, grid, comm)
    lat_l, cfg_l, obs_l, attrs_l = _read_direct(path_l, grid, comm)
    for p, attrs in ((path_s, attrs_s), (path_l, attrs_l), *((p, read_attrs(p)) for _, p in extra)):
        _check_source_action(p, attrs, act)
    if lat_s.shape != small_shape or lat_l.shape != shape:
        raise ConfigError(f"irg: ensembles have shapes {lat_s.shape}, {lat_l.shape}; expected {small_shape}, {shape}")
    ladder = [fs.Series(f"direct L={shp[0]}", read_observables(p), int(np.prod(shp)), shp[0], mu2_0)
              for shp, p in extra]
    ladder += [fs.Series("direct L/b", obs_s, lat_s.volume, L // b, mu2_0),
               fs.Series("direct L", obs_l, lat_l.volume, L, mu2_0)]
    paths = {int(s.L): p for s, p in zip(ladder, [p for _, p in extra] + [path_s, path_l])}
    return _Direct(lat_s, cfg_s, obs_s, lat_l, cfg_l, obs_l, ladder, paths)


@dataclass
class _Critical:
    mu2_c: float
    dmu2_c: float
    mu2_star: float
    win_s: float               # reweighting windows (ESS >= ess_fraction * N) of L/b and L
    win_l: float
    zeta: float
    dzeta: float

    window = property(lambda self: min(self.win_s, self.win_l))


def _critical_stage(small, large, irg, log) -> _Critical:
    """Binder crossing of L/b and L, mu2*, and the field rescaling zeta (jackknife errors)."""
    mu2_0, nb, lengths = large.mu2, irg["n_bins"], [small.n, large.n]
    win_s = fs.ess_window(small, mu2_0, irg["ess_fraction"])
    win_l = fs.ess_window(large, mu2_0, irg["ess_fraction"])
    window = min(win_s, win_l)
    mu2_c, dmu2_c, _ = jackknife(functools.partial(_crossing, small=small, large=large, mu2_0=mu2_0, window=window),
                                 lengths, nb)
    mu2_c, dmu2_c = float(mu2_c), float(dmu2_c)
    if not np.isfinite(mu2_c):
        log(f"  no Binder crossing within mu2 = {mu2_0} +- {window:.4f}: using mu2_c = mu2 = {mu2_0}")
        mu2_c, dmu2_c = mu2_0, float("nan")
    log(f"  Binder crossing L/b-L: mu2_c = {mu2_c:.5f} +- {dmu2_c:.5f} (reweighting window +-{window:.4f})")
    mu2_star = mu2_c if irg["critical"] == "crossing" else irg["mu2_critical"]
    if abs(mu2_star - mu2_0) > window:
        raise ValueError(f"irg: mu2 = {mu2_star} for zeta and FSS lies outside the reweighting window "
                         f"{mu2_0} +- {window:.4f}; sample closer to it (action.mu2)")
    log(f"  zeta and FSS at mu2* = {mu2_star:.5f} ({irg['critical']})")
    if irg["rescale"] == "match":
        zeta, dzeta, _ = jackknife(functools.partial(_zeta, small=small, large=large, mu2_0=mu2_0, where=mu2_star),
                                   lengths, nb)
        zeta, dzeta = float(zeta), float(dzeta)
    else:
        zeta, dzeta = irg["zeta"], 0.0
    b = irg["b"]
    log(f"  field rescaling zeta = {zeta:.5f} +- {dzeta:.5f} ({irg['rescale']}); b^(1/8) = {b ** 0.125:.5f}")
    return _Critical(mu2_c, dmu2_c, float(mu2_star), win_s, win_l, zeta, dzeta)


def _exponent_stage(direct, crit, small_up, lv, gain, linear, irg, log):
    """The exponent table, the flow and the size pairs."""
    small, large = direct.small, direct.large
    b, levels, nb, mu2_0 = irg["b"], irg["levels"], irg["n_bins"], large.mu2
    d = direct.lat_l.ndim
    L, Ls, n_up, lengths = large.L, lv["L"], lv["n"], [small.n, large.n]
    ex, dex, _ = jackknife(functools.partial(_exponents, small=small, large=large, mu2_0=mu2_0,
                                             mu2_star=crit.mu2_star, mu2_c=crit.mu2_c, zeta=crit.zeta, gain=gain,
                                             match=irg["rescale"] == "match", b=b, d=d, levels=levels), lengths, nb)
    # the same fits on the measured upscaled ensembles themselves (irg.upscale_configs configurations,
    # in Markov order; reweighted with the source's sum phi^2): no use of the zero-mode relation
    level_series = [fs.Series(f"L{int(Ls[k])}", {"abs_m": dd["abs_m"], "m2": dd["m2"], "m4": dd["m4"],
                                                 "sum_phi2": dd["sum_phi2_src"]}, int(Ls[k]) ** d, int(Ls[k]), mu2_0)
                    for k, dd in sorted(lv["per_level"].items())]
    exm, dexm, _ = jackknife(functools.partial(_measured_exponents, level_series=level_series, Ls=Ls,
                                               shift=crit.mu2_star - mu2_0), [n_up], max(2, min(nb, n_up)))
    mu2_grid = np.linspace(crit.mu2_c - 0.8 * crit.win_s, crit.mu2_c + 0.8 * crit.win_s, 9)
    window_l = (mu2_0 - crit.win_l, mu2_0 + crit.win_l)
    (lam, nu), (dlam, dnu), _ = jackknife(functools.partial(_flow_nu, small_up=small_up, large=large,
                                                            mu2_grid=mu2_grid, window_large=window_l, b=b),
                                          lengths, nb)
    flow = {"mu2": mu2_grid, "mu2_prime": fs.flow(small_up, large, mu2_grid, window_l),
            "slope": float(lam), "dslope": float(dlam)}
    log(f"  flow: lambda = dmu2'/dmu2 = {lam:.4f} +- {dlam:.4f}  ->  nu = {nu:.4f} +- {dnu:.4f}")
    # every pair of neighbouring direct sizes (extra_pairs > 0: the drift with L), analysed alike
    ladder = direct.ladder
    pairs = [fs.pair_analysis(ladder[i], ladder[i + 1], crit.mu2_star, b, nb, irg["ess_fraction"])
             for i in range(len(ladder) - 1)]
    pair = f"direct L={L // b},{L}"
    table = [("gamma/nu", "upscaled FSS", ex[0], dex[0], 7 / 4),      # NaN for tanh (no single gain)
             ("beta/nu", "upscaled FSS", ex[1], dex[1], 1 / 8),
             ("nu", "Binder flow", nu, dnu, 1.0),
             ("gamma/nu", f"{pair} at mu2*", ex[2], dex[2], 7 / 4),
             ("beta/nu", f"{pair} at mu2*", ex[3], dex[3], 1 / 8)]
    if linear:
        log(f"  measured upscaled ensembles ({n_up} configs per size): gamma/nu = {exm[0]:.6f}, "
            f"beta/nu = {exm[1]:.6f} (the exact-gain fit: {ex[0]:.6f}, {ex[1]:.6f})")
    else:  # no single zero-mode gain: the measured carried configurations are all there is
        table[:2] = [("gamma/nu", f"upscaled, {n_up} configs", exm[0], dexm[0], 7 / 4),
                     ("beta/nu", f"upscaled, {n_up} configs", exm[1], dexm[1], 1 / 8)]
    if irg["critical"] != "crossing":
        table += [("gamma/nu", f"{pair} at cross", ex[4], dex[4], 7 / 4),
                  ("beta/nu", f"{pair} at cross", ex[5], dex[5], 1 / 8)]
    return [Exponent(n, m, float(v), float(e), float(x)) for n, m, v, e, x in table], flow, pairs


def run_irg(cfg, comm=None, quiet=False, resume=False, log=None) -> IrgResult:
    """The whole pipeline for a validated config (collective over `comm`); writes the direct and level
    ensembles, the weights and the results file (rank 0), and returns what the results file holds."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    with failure_policy(comm):
        return _run_irg(cfg, comm, quiet, resume, log or _rank0_log(comm))


def _run_irg(cfg, comm, quiet, resume, log) -> IrgResult:
    model = check_irg_config(cfg, comm)
    irg, out = cfg["irg"], cfg["output"]
    L, b, levels = cfg["lattice"]["shape"][0], irg["b"], irg["levels"]
    stem = output_stem(out["path"])
    # the one output rule (config.check_outputs) after every check: --resume continues its own files
    check_outputs(irg_outputs(cfg), out["overwrite"] or resume, comm)
    t_start = time.time()
    timings = {}

    log(f"irg: L = {L}, b = {b}, {levels} levels -> {L * b ** levels}, {comm.size} rank(s)")
    direct = _direct_stage(cfg, comm, stem, quiet, resume)
    timings["direct_sampling_s"] = time.time() - t_start
    taus = {f"L{s.L}": tau_int(s.abs_m) for s in direct.ladder}
    for k, (tau, dtau) in taus.items():
        log(f"  tau_int(|m|) at {k}: {tau:.2f} +- {dtau:.2f} stored configurations "
            f"(bins of {direct.large.n // irg['n_bins']} configs)")
    crit = _critical_stage(direct.small, direct.large, irg, log)

    t = time.time()
    model.scale = crit.zeta
    info = model.train(direct.lat_l, direct.cfg_l, epochs=irg["epochs"], lr=irg["lr"], obs_weight=irg["obs_weight"],
                       seed=irg["seed"])
    timings["training_s"] = time.time() - t
    # one zero-mode gain s: the linear model, refined or not by block-constrained moves (they keep every
    # block sum); unconstrained relaxation sweeps move m, then only the measured fits remain
    linear = model.activation == "linear" and not (irg["method"] == "refined" and irg["relax_sweeps"] > 0)
    gain = model.gain() if linear else float("nan")
    weights_path = f"{stem}_weights.h5"
    if comm.rank == 0:
        model.save(weights_path)
    gain_text = f"zero-mode gain s = {gain:.6f}" if linear else "no single zero-mode gain (the relax sweeps move m)"
    log(f"  trained: MSE/site {info['loss']:.5f}, noise sigma {info['sigma']:.4f}, {gain_text} "
        f"(1/zeta = {1 / crit.zeta:.6f}) -> {weights_path}")

    from qftml.rg.inverse import fine_lattice

    small_up = _flow_series(model, direct.lat_s, direct.cfg_s, direct.obs_s, cfg["action"], irg["seed"], L,
                            make_refiner(cfg, fine_lattice(direct.lat_s, b)))
    t = time.time()
    lv = _upscale_chain(model, direct.lat_l, direct.cfg_l, direct.obs_l, cfg, stem, weights_path, quiet, comm,
                        crit.zeta, gain, log)
    timings["upscaling_s"] = time.time() - t
    timings["upscaling_s_per_config"] = timings["upscaling_s"] / lv["n"]

    exponents, flow, pairs = _exponent_stage(direct, crit, small_up, lv, gain, linear, irg, log)
    timings["total_s"] = time.time() - t_start
    result = IrgResult(
        exponents=exponents, pairs=pairs,
        levels={k: lv[k] for k in ("L", "per_level", "files", "stored", "snapshots", "n")},
        flow=flow, timings=timings, paths={"results": out["path"], "weights": weights_path, "direct": direct.paths},
        mu2_c=crit.mu2_c, dmu2_c=crit.dmu2_c, mu2_star=crit.mu2_star, window=float(crit.window), zeta=crit.zeta,
        dzeta=crit.dzeta, gain=float(gain), train_mse=float(info["loss"]), noise_sigma=float(info["sigma"]),
        zero_mode_check=float(lv["ratio_dev"]), tau_int={k: (float(a), float(e)) for k, (a, e) in taus.items()},
        model=model, series={"small": direct.small, "large": direct.large, "small_up": small_up,
                             "smaller": direct.ladder[-3::-1]})
    on_root(comm, lambda: write_results(out["path"], result, cfg), (ValueError, OSError))
    return result


def write_results(path, result: IrgResult, cfg) -> None:
    """The results file: attributes (the scalars, timings, tau_int, config), /exponents, /levels,
    /flow, /pairs, /weights (the model). Called on one rank."""
    import h5py

    import qftml

    with h5py.File(path, "w") as f:
        f.attrs["format"] = "qftml-irg-results"
        f.attrs["config"] = json.dumps(cfg, sort_keys=True)
        f.attrs["package_version"] = qftml.__version__
        for k in ("mu2_c", "dmu2_c", "mu2_star", "zeta", "dzeta", "gain", "train_mse", "noise_sigma",
                  "zero_mode_check"):
            f.attrs[k] = getattr(result, k)
        f.attrs["flow_slope"] = result.flow["slope"]
        f.attrs["dflow_slope"] = result.flow["dslope"]
        f.attrs["timings"] = json.dumps(result.timings)
        f.attrs["tau_int_abs_m"] = json.dumps(result.tau_int)
        dt = np.dtype([("exponent", "S16"), ("method", "S32"), ("value", "f8"), ("error", "f8"), ("exact", "f8")])
        f.create_dataset("exponents", data=np.array([(e.name.encode(), e.method.encode(), e.value, e.error, e.exact)
                                                     for e in result.exponents], dtype=dt))
        g = f.create_group("levels")
        Ls = result.levels["L"]
        g.create_dataset("L", data=Ls)
        for k, dd in result.levels["per_level"].items():
            h = g.create_group(f"L{int(Ls[k])}")
            for q, v in dd.items():
                h.create_dataset(q, data=v)
        g.attrs["files"] = json.dumps(result.levels["files"])
        fl = f.create_group("flow")
        fl.create_dataset("mu2", data=result.flow["mu2"])
        fl.create_dataset("mu2_prime", data=result.flow["mu2_prime"])
        qs = ("mu2_c", "U_c", "lambda", "nu", "gamma_nu", "beta_nu")
        dp = np.dtype([("L_small", "i8"), ("L_large", "i8")] + [(n, "f8") for q in qs for n in (q, "d" + q)])
        f.create_dataset("pairs", data=np.array([(p["L_small"], p["L_large"], *[x for q in qs for x in p[q]])
                                                 for p in result.pairs], dtype=dp))
        result.model.save(f.create_group("weights"))
        f.attrs["weights_file"] = result.paths["weights"]
