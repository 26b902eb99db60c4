"""`mpiexec -n N qftml irg CONFIG.toml [--set section.key=value ...] [--quiet]`: inverse RG.

Steps (all collective over MPI.COMM_WORLD; the process grid is kept at every size):
 1. direct Markov-chain ensembles at L/b and L ([lattice] shape = L, [action], [sampler]), written
    as ordinary ensemble files <stem>_direct_L<n>.h5 (or read from irg.small_ensemble/irg.ensemble);
 2. Binder crossing of L/b and L (reweighting in mu2) -> mu2_c; mu2* = mu2_c or irg.mu2_critical
    (irg.critical); field rescaling zeta of R_b ("match": zeta^2 = <m^2>_{L/b} / <m^2>_L at mu2*,
    so the blocked L ensemble has the magnetisation scale of the L/b ensemble; "fixed": irg.zeta);
 3. training of the transposed convolution on the L ensemble (qftml.rg.inverse), weights saved;
 4. upscaling of irg.upscale_configs configurations of the L ensemble through irg.levels steps
    L -> bL -> ... -> b^k L, each level written as an ordinary ensemble file <stem>_L<n>.h5
    (/configs stored while n_cfg * volume * 8 bytes <= irg.store_max_mb, else observables only,
    plus <stem>_L<n>_snapshot.h5 with the first irg.snapshot configurations);
 5. critical exponents (qftml.stats.finite_size): gamma/nu, beta/nu from FSS fits over the upscaled sizes at
    mu2*, nu from the flow mu2 -> mu2' of Binder-cumulant matching between the upscaled L/b
    ensemble and the direct L ensemble; direct two-size FSS for comparison; jackknife errors;
    every pair of neighbouring direct sizes (irg.extra_pairs adds L/b^2, ...) by critical.pair_analysis;
 6. results in [output] path (HDF5: /exponents, /pairs, /levels, /flow, /weights) and plots
    <stem>_*.png (configurations per size, observables vs L with fits, flow, Binder curves).

Exports HELP, SCHEMA, add_arguments(parser), run(args).
"""
from __future__ import annotations

import json
import os
import time
import types

import numpy as np

from qftml.config import ACTION, LATTICE, OUTPUT, SAMPLER, Spec

HELP = "inverse RG: train a transposed convolution, upscale an ensemble to b^k L, critical exponents"

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
    "seed": Spec("int", 1, min=0, help="seed of the upscaling noise"),
    "n_bins": Spec("int", 20, min=2, help="jackknife bins"),
    "ess_fraction": Spec("float", 0.3, min=0.0, help="reweighting window: ESS >= fraction * N"),
    "ensemble": Spec("str", "", help="existing ensemble file at L (default: sample it)"),
    "small_ensemble": Spec("str", "", help="existing ensemble file at L/b (default: sample it)"),
    "extra_pairs": Spec("int", 0, min=0, help="also sample L/b^2 ... L/b^(1+n) directly and report every pair of "
                                              "neighbouring sizes (crossing, U there, nu, gamma/nu): the drift with L"),
    "plots": Spec("bool", True),
}
SCHEMA = {"lattice": LATTICE, "action": ACTION, "sampler": SAMPLER, "irg": IRG, "output": OUTPUT}


def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)


def _stem(path):
    return path[:-3] if path.endswith(".h5") else path


def _attrs(lattice, act, sampler, seed, extra):
    import qftml

    return {"action": act, "lattice": {"shape": list(lattice.shape), "grid": list(lattice.grid)},
            "sampler": sampler, "seed": int(seed), "process_grid": list(lattice.grid),
            "n_ranks": int(lattice.size), "package_version": qftml.__version__,
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


def _sample_direct(shape, grid, comm, act, smp, path, log, quiet):
    """A Markov-chain ensemble at `shape`, written to `path`; returns (lattice, local configs, observables)."""
    import qftml
    from mpi4py import MPI

    from qftml.io.ensembles import EnsembleWriter, observable_layout, stack_observables

    lat = qftml.Lattice(shape, comm=comm, grid=grid or None)
    action = qftml.Action.homogeneous(lat, kappa=act["kappa"], mu2=act["mu2"], lam=act["lam"], h=act["h"],
                                      field=act["field"])
    s = qftml.Sampler(action, seed=smp["seed"], algorithm=smp["algorithm"], hits=smp["hits"], step=smp["step"],
                      start=smp["start"])
    t0 = time.time()
    s.thermalize(smp["thermalize"])
    layout = observable_layout(lat, action)
    writer = EnsembleWriter.create(path, lat, _attrs(lat, act, dict(smp), smp["seed"], {}), layout, couplings={},
                                   store_configs=True)
    n = smp["sweeps"] // smp["every"]
    configs, records, batch_c, batch_r = [], [], [], []
    bar = _bar(n, f"sample L={shape[0]}", quiet)
    for i in range(n):
        s.sweep(smp["every"])
        rec = s.measure()
        rec["sweep"] = s.sweep_index
        local = s.field.local
        configs.append(local)
        records.append(rec)
        batch_c.append(local)
        batch_r.append(rec)
        if len(batch_r) == 64 or i == n - 1:
            writer.append(np.array(batch_c), stack_observables(batch_r, layout))
            batch_c, batch_r = [], []
        bar.update(1)
    bar.close()
    writer.set_attrs(complete=True, end_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     acceptance=s.acceptance(), seconds=time.time() - t0)
    writer.close()
    log(f"  direct L={shape[0]} (rank {MPI.COMM_WORLD.rank}): {n} configs, {smp['sweeps']} sweeps, "
        f"acceptance {s.acceptance():.3f}, "
        f"{time.time() - t0:.1f} s -> {path}")
    return lat, np.array(configs), stack_observables(records, layout)


def _read_direct(path, grid, comm):
    """(lattice on the grid, this rank's blocks of /configs, observables, attributes) of an ensemble file."""
    import qftml
    from qftml.io.ensembles import open_ensemble, read_attrs, read_observables

    attrs = read_attrs(path)
    shape = tuple(attrs["lattice"]["shape"])
    lat = qftml.Lattice(shape, comm=comm, grid=grid or None)
    with open_ensemble(path) as ens:
        if not ens.has_configs:
            raise ValueError(f"{path}: has no /configs; the inverse RG needs configurations")
        local = np.asarray(ens.configs[(slice(0, ens.n_records),) + lat.local_slices])
    return lat, local, read_observables(path), attrs


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _bar(total, desc, quiet):
    if quiet:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def run(args) -> int:
    from mpi4py import MPI

    from qftml.stats import finite_size as critical
    from qftml.config import ConfigError, load_config
    from qftml.rg.inverse import InverseRG
    from qftml.rg.blocking import check_blockable

    comm = MPI.COMM_WORLD
    cfg = load_config(args.config, SCHEMA, args.overrides, comm)
    lat_cfg, act, smp, irg, out = cfg["lattice"], cfg["action"], cfg["sampler"], cfg["irg"], cfg["output"]
    quiet = args.quiet
    rank0 = comm.rank == 0

    def log(msg):
        if rank0:                 # --quiet silences the progress bars, not the report
            print(msg, flush=True)

    shape = tuple(lat_cfg["shape"])
    b, levels = irg["b"], irg["levels"]
    if act["field"] != "real":
        raise ConfigError("irg: the critical-exponent pipeline needs action.field = 'real' "
                          "(R_b for ising is qftml.rg.blocking.block_local(field='ising'))")
    if len(set(shape)) != 1:
        raise ConfigError(f"irg: lattice.shape = {list(shape)} must be a hypercube (FSS in one L)")
    grid = lat_cfg["grid"]
    probe = __import__("qftml").Lattice(shape, comm=comm, grid=grid or None)
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
    stem = _stem(out["path"])
    if rank0 and os.path.dirname(out["path"]):
        os.makedirs(os.path.dirname(out["path"]), exist_ok=True)
    comm.Barrier()
    d = len(shape)
    L = shape[0]
    t_start = time.time()
    timings = {}

    # 1. direct ensembles
    log(f"irg: L = {L}, b = {b}, {levels} levels -> {L * b ** levels}, {comm.size} rank(s)")
    small_shape = tuple(n // b for n in shape)
    t = time.time()
    path_s = irg["small_ensemble"] or f"{stem}_direct_L{L // b}.h5"
    path_l = irg["ensemble"] or f"{stem}_direct_L{L}.h5"
    # tiny lattices: each chain runs on one rank (COMM_SELF), the two chains side by side
    jobs = [(small_shape, path_s)] * (not irg["small_ensemble"]) + [(shape, path_l)] * (not irg["ensemble"])
    # extra_pairs: direct chains at L/b^2, ..., L/b^(1+n) (observables only enter the analysis)
    extra = [(tuple(n // b ** j for n in shape), f"{stem}_direct_L{L // b ** j}.h5") for j in range(2, 2 + n_extra)]
    jobs += extra
    error = None
    for i, (shp, path) in enumerate(jobs):
        if i % comm.size == comm.rank:
            try:
                _sample_direct(shp, [], MPI.COMM_SELF, act, smp, path, lambda msg: print(msg, flush=True), quiet)
            except (ValueError, OSError) as e:
                error = f"sampling L={shp[0]} failed: {e}"
    errors = [e for e in comm.allgather(error) if e]
    if errors:
        raise ValueError(errors[0])
    lat_s, cfg_s, obs_s, attrs_s = _read_direct(path_s, grid, comm)
    lat_l, cfg_l, obs_l, attrs_l = _read_direct(path_l, grid, comm)
    from qftml.io.ensembles import read_attrs, read_observables

    obs_extra = [read_observables(path) for _, path in extra]
    for path, attrs in ((path_s, attrs_s), (path_l, attrs_l), *((p_, read_attrs(p_)) for _, p_ in extra)):
        # reweighting starts from [action]: an ensemble of other couplings would be silently wrong
        theirs = attrs.get("action", {}) if isinstance(attrs.get("action"), dict) else {}
        bad = [f"{k} = {theirs[k]} (config: {act[k]})" for k in ("kappa", "mu2", "lam", "h")
               if k in theirs and abs(float(theirs[k]) - float(act[k])) > 1e-12]
        if theirs.get("couplings") or bad:
            raise ValueError(f"irg: {path} was not sampled with the [action] of this config: "
                             f"{', '.join(bad) or 'inhomogeneous couplings'}")
    timings["direct_sampling_s"] = time.time() - t
    if lat_s.shape != small_shape or lat_l.shape != shape:
        raise ConfigError(f"irg: ensembles have shapes {lat_s.shape}, {lat_l.shape}; expected {small_shape}, {shape}")
    mu2_0 = act["mu2"]
    small = critical.Series("direct L/b", obs_s, lat_s.volume, L // b, mu2_0)
    large = critical.Series("direct L", obs_l, lat_l.volume, L, mu2_0)
    smaller = [critical.Series(f"direct L/b^{j + 2}", o_, int(np.prod(shp)), shp[0], mu2_0)
               for j, ((shp, _), o_) in enumerate(zip(extra, obs_extra))]
    taus = {f"L{s.L}": critical.tau_int(s.abs_m) for s in (*smaller[::-1], small, large)}
    for k, (tau, dtau) in taus.items():
        log(f"  tau_int(|m|) at {k}: {tau:.2f} +- {dtau:.2f} stored configurations "
            f"(bins of {large.n // irg['n_bins']} configs)")

    # 2. crossing and field rescaling
    win_s = critical.ess_window(small, mu2_0, irg["ess_fraction"])
    win_l = critical.ess_window(large, mu2_0, irg["ess_fraction"])
    window = min(win_s, win_l)
    nb = irg["n_bins"]

    def crossing(idx):
        return critical.binder_crossing(small, large, mu2_0, window, idx)

    mu2_c, dmu2_c, _ = critical.jackknife(crossing, [small, large], nb)
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

    def zeta_of(idx, where=None):
        where = mu2_star if where is None else where
        ms = critical.moments(small, where - mu2_0, idx[0])["m2"]
        ml = critical.moments(large, where - mu2_0, idx[1])["m2"]
        return np.sqrt(ms / ml)

    if irg["rescale"] == "match":
        zeta, dzeta, _ = critical.jackknife(zeta_of, [small, large], nb)
        zeta, dzeta = float(zeta), float(dzeta)
    else:
        zeta, dzeta = irg["zeta"], 0.0
    log(f"  field rescaling zeta = {zeta:.5f} +- {dzeta:.5f} ({irg['rescale']}); b^(1/8) = {b ** 0.125:.5f}")

    # 3. training
    t = time.time()
    model.scale = zeta
    info = model.train(lat_l, cfg_l, epochs=irg["epochs"], lr=irg["lr"], obs_weight=irg["obs_weight"], seed=irg["seed"])
    timings["training_s"] = time.time() - t
    gain = model.gain() if model.activation == "linear" else float("nan")
    weights_path = f"{stem}_weights.h5"
    if rank0:
        model.save(weights_path)
    log(f"  trained: MSE/site {info['loss']:.5f}, noise sigma {info['sigma']:.4f}, zero-mode gain s = {gain:.6f} "
        f"(1/zeta = {1 / zeta:.6f}) -> {weights_path}")

    # 4a. one step from L/b for the flow (U of the upscaled ensemble vs U of the direct L ensemble)
    _, up_small = model.upscale(lat_s, cfg_s, seed=irg["seed"], first_config=0, level=99)
    from qftml.rg.inverse import fine_lattice, local_observables

    lat_su = fine_lattice(lat_s, b)
    obs_su = {k: [] for k in ("abs_m", "m2", "m4")}
    for c in up_small:
        o = local_observables(lat_su, c, act["kappa"], mu2_0, act["lam"], act["h"])
        for k in obs_su:
            obs_su[k].append(o[k])
    obs_su["sum_phi2"] = obs_s["sum_phi2"]           # reweighting variable: the source's sum phi^2
    small_up = critical.Series("upscaled L/b -> L", obs_su, lat_su.volume, L, mu2_0)

    # 4b. the upscaling chain
    t = time.time()
    level_stats = _upscale_chain(model, lat_l, cfg_l, obs_l, irg, act, stem, log, quiet, comm, zeta, gain, mu2_0)
    timings["upscaling_s"] = time.time() - t
    timings["upscaling_s_per_config"] = timings["upscaling_s"] / level_stats["n"]

    # 5. exponents
    Ls = np.array([L * b ** k for k in range(levels + 1)], dtype=float)
    zeta_c = zeta

    def exponents(idx):
        """gamma/nu, beta/nu from the upscaled sizes at mu2*; the zero-mode gain moves with zeta.
        Then the direct two-size FSS at mu2* and at the crossing, for comparison."""
        z = zeta_of(idx) if irg["rescale"] == "match" else zeta_c
        s = gain * zeta_c / z               # linear MSE filter: gain scales as 1 / zeta exactly
        mom = critical.moments(large, mu2_star - mu2_0, idx[1])
        chi = [mom["chi"] * (b ** d * s * s) ** k for k in range(levels + 1)]
        am = [mom["abs_m"] * s ** k for k in range(levels + 1)]
        gnu = critical.fss_slope(Ls, chi)
        bnu = -critical.fss_slope(Ls, am)
        out = [gnu, bnu]
        for where in (mu2_star, mu2_c):
            ml = critical.moments(large, where - mu2_0, idx[1])
            ms = critical.moments(small, where - mu2_0, idx[0])
            out += [np.log(ml["chi"] / ms["chi"]) / np.log(b), -np.log(ml["abs_m"] / ms["abs_m"]) / np.log(b)]
        return out

    ex, dex, _ = critical.jackknife(exponents, [small, large], nb)

    # the same fits on the measured upscaled ensembles themselves (irg.upscale_configs configurations,
    # in Markov order; reweighted with the source's sum phi^2): no use of the zero-mode relation
    lv = [critical.Series(f"L{int(Ls[k])}", {"abs_m": dd["abs_m"], "m2": dd["m2"], "m4": dd["m4"],
                                              "sum_phi2": dd["sum_phi2_src"]}, int(Ls[k]) ** d, int(Ls[k]), mu2_0)
          for k, dd in sorted(level_stats["per_level"].items())]

    def measured(idx):
        moms = [critical.moments(s_, mu2_star - mu2_0, idx[0]) for s_ in lv]
        return [critical.fss_slope(Ls, [m_["chi"] for m_ in moms]),
                -critical.fss_slope(Ls, [m_["abs_m"] for m_ in moms])]

    class _Subset:  # jackknife bins over the carried configurations (shared by every level)
        n = lv[0].n

    exm, dexm, _ = critical.jackknife(measured, [_Subset], max(2, min(nb, lv[0].n)))

    half = 0.8 * win_s
    mu2_grid = np.linspace(mu2_c - half, mu2_c + half, 9)
    window_l = (mu2_0 - win_l, mu2_0 + win_l)

    def nu_of(idx):
        lam_ = critical.flow_slope(small_up, large, mu2_grid, window_l, idx)
        return [lam_, np.log(b) / np.log(1.0 / lam_) if 0 < lam_ < 1 else np.nan]

    (lam, nu), (dlam, dnu), _ = critical.jackknife(nu_of, [small, large], nb)
    flow_vals = critical.flow(small_up, large, mu2_grid, window_l)
    log(f"  flow: lambda = dmu2'/dmu2 = {lam:.4f} +- {dlam:.4f}  ->  nu = {nu:.4f} +- {dnu:.4f}")

    # every pair of neighbouring direct sizes (extra_pairs > 0: the drift with L), analysed alike
    ladder = [*smaller[::-1], small, large]
    pairs = [critical.pair_analysis(ladder[i], ladder[i + 1], mu2_star, b, nb, irg["ess_fraction"])
             for i in range(len(ladder) - 1)]
    log("\n  size pair   mu2_c               U(mu2_c)          nu (Binder matching)  "
        "gamma/nu (<m^2>, mu2*)  beta/nu (mu2*)")
    for p_ in pairs:
        log(f"  {p_['L_small']:4d}/{p_['L_large']:<4d}   " + "   ".join(
            f"{p_[q][0]:8.5f}({p_[q][1]:.5f})" for q in ("mu2_c", "U_c", "nu", "gamma_nu", "beta_nu")))

    table = [
        ("gamma/nu", "upscaled FSS", ex[0], dex[0], 7 / 4),      # NaN for tanh (no single gain)
        ("beta/nu", "upscaled FSS", ex[1], dex[1], 1 / 8),
        ("nu", "Binder flow", nu, dnu, 1.0),
        ("gamma/nu", f"direct L={L // b},{L} at mu2*", ex[2], dex[2], 7 / 4),
        ("beta/nu", f"direct L={L // b},{L} at mu2*", ex[3], dex[3], 1 / 8),
    ]
    if model.activation == "linear":
        log(f"  measured upscaled ensembles ({lv[0].n} configs per size): gamma/nu = {exm[0]:.6f}, "
            f"beta/nu = {exm[1]:.6f} (the exact-gain fit: {ex[0]:.6f}, {ex[1]:.6f})")
    else:  # no single zero-mode gain: the measured carried configurations are all there is
        table[:2] = [("gamma/nu", f"upscaled, {lv[0].n} configs", exm[0], dexm[0], 7 / 4),
                     ("beta/nu", f"upscaled, {lv[0].n} configs", exm[1], dexm[1], 1 / 8)]
    if irg["critical"] != "crossing":
        table += [("gamma/nu", f"direct L={L // b},{L} at cross", ex[4], dex[4], 7 / 4),
                  ("beta/nu", f"direct L={L // b},{L} at cross", ex[5], dex[5], 1 / 8)]
    log("\n  exponent   method                        value      error    exact  deviation")
    for name, how, v, e, exact in table:
        log(f"  {name:9s}  {how:27s} {v:8.4f}  {e:8.4f}  {exact:7.4f}  {100 * (v - exact) / exact:+7.2f}%")
    timings["total_s"] = time.time() - t_start
    log(f"\n  timings: {json.dumps({k: round(v, 3) for k, v in timings.items()})}")

    # 6. results and plots
    if rank0:
        _write_results(out["path"], cfg, table, Ls, level_stats, mu2_c, dmu2_c, zeta, dzeta, gain, info,
                       mu2_grid, flow_vals, lam, dlam, taus, timings, model, weights_path, mu2_star, pairs)
        if irg["plots"]:
            _plots(stem, level_stats, Ls, small, large, small_up, mu2_0, mu2_c, mu2_grid, flow_vals, lam, window,
                   ex, dex, mu2_star, gain, b, d, smaller)
    comm.Barrier()
    log(f"  results -> {out['path']}")
    return 0


def _upscale_chain(model, lat_l, cfg_l, obs_l, irg, act, stem, log, quiet, comm, zeta, gain, mu2_0):
    """Carry irg.upscale_configs configurations of the L ensemble through all levels; write each level."""
    from qftml.io.ensembles import EnsembleWriter, observable_layout, stack_observables
    from qftml.rg.inverse import local_observables

    b, levels = irg["b"], irg["levels"]
    n_total = cfg_l.shape[0]
    n_up = min(irg["upscale_configs"], n_total)
    pick = np.linspace(0, n_total - 1, n_up).astype(int)
    lats = [lat_l]
    from qftml.rg.inverse import fine_lattice

    for _ in range(levels):
        lats.append(fine_lattice(lats[-1], b))
    stand_in = types.SimpleNamespace(offsets=[tuple(int(i == j) for j in range(lat_l.ndim)) for i in range(lat_l.ndim)])
    writers, snaps, paths = [], [], []
    for k in range(1, levels + 1):
        lat = lats[k]
        store = n_up * lat.volume * 8 <= irg["store_max_mb"] * 2 ** 20
        layout = observable_layout(lat, stand_in)
        attrs = _attrs(lat, {**act,
                             "note": "couplings of the source ensemble; configurations come from the inverse RG"},
                       {"algorithm": "inverse-rg", "level": k, "b": b, "gain": gain, "zeta": zeta,
                        "filter_size": model.size, "source_L": lat_l.shape[0], "weights": f"{_stem(stem)}_weights.h5"},
                       irg["seed"], {"irg_level": k})
        path = f"{stem}_L{lat.shape[0]}.h5"
        writers.append((EnsembleWriter.create(path, lat, attrs, layout, couplings={}, store_configs=store), layout))
        snap = None
        if not store and irg["snapshot"] > 0:
            snap = (EnsembleWriter.create(f"{stem}_L{lat.shape[0]}_snapshot.h5", lat, attrs, layout, couplings={},
                                          store_configs=True), layout)
        snaps.append(snap)
        paths.append((path, store, snap is not None))
    per_level = {k: {"abs_m": [], "m2": [], "m4": [], "sum_phi2_src": []} for k in range(levels + 1)}
    ratio_dev = 0.0
    bar = _bar(n_up, "upscale", quiet or comm.rank != 0)
    for i, src in enumerate(pick):
        x = cfg_l[src][None]
        m0 = obs_l["m"][src]
        for key in ("abs_m", "m2", "m4"):
            per_level[0][key].append(obs_l[key][src])
        per_level[0]["sum_phi2_src"].append(obs_l["sum_phi2"][src])
        for k in range(1, levels + 1):
            _, x = model.upscale(lats[k - 1], x, seed=irg["seed"], first_config=int(src), level=k)
            o = local_observables(lats[k], x[0], act["kappa"], mu2_0, act["lam"], act["h"])
            o["sweep"] = int(obs_l["sweep"][src]) if "sweep" in obs_l else int(src)
            if np.isfinite(gain) and m0 != 0:
                ratio_dev = max(ratio_dev, abs(o["m"] / (m0 * gain ** k) - 1.0))
            for key in ("abs_m", "m2", "m4"):
                per_level[k][key].append(o[key])
            per_level[k]["sum_phi2_src"].append(obs_l["sum_phi2"][src])
            w, layout = writers[k - 1]
            w.append(x if w.store_configs else None, stack_observables([o], layout))
            if snaps[k - 1] is not None and i < irg["snapshot"]:
                snaps[k - 1][0].append(x, stack_observables([o], snaps[k - 1][1]))
        bar.update(1)
    bar.close()
    for w, _ in writers:
        w.set_attrs(complete=True, end_time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        w.close()
    for s in snaps:
        if s is not None:
            s[0].set_attrs(complete=True)
            s[0].close()
    for (path, store, snap), lat in zip(paths, lats[1:]):
        log(f"  level L={lat.shape[0]}: {n_up} configs -> {path}" + ("" if store else " (observables only)")
            + (" + snapshot" if snap else ""))
    log(f"  check: max |m_k / (s^k m_0) - 1| over configs and levels = {ratio_dev:.2e}")
    return {"n": n_up, "pick": pick,
            "per_level": {k: {q: np.array(v) for q, v in d.items()} for k, d in per_level.items()},
            "paths": paths, "ratio_dev": ratio_dev, "shapes": [lt.shape for lt in lats]}


def _write_results(path, cfg, table, Ls, level_stats, mu2_c, dmu2_c, zeta, dzeta, gain, info, mu2_grid, flow_vals,
                   lam, dlam, taus, timings, model, weights_path, mu2_star, pairs=()):
    import h5py

    import qftml

    with h5py.File(path, "w") as f:
        f.attrs["format"] = "qftml-irg-results"
        f.attrs["config"] = json.dumps(cfg, sort_keys=True)
        f.attrs["package_version"] = qftml.__version__
        for k, v in {"mu2_c": mu2_c, "dmu2_c": dmu2_c, "mu2_star": mu2_star, "zeta": zeta, "dzeta": dzeta, "gain": gain,
                     "train_mse": info["loss"], "noise_sigma": info["sigma"], "flow_slope": lam,
                     "dflow_slope": dlam, "zero_mode_check": level_stats["ratio_dev"]}.items():
            f.attrs[k] = v
        f.attrs["timings"] = json.dumps(timings)
        f.attrs["tau_int_abs_m"] = json.dumps(taus)
        dt = np.dtype([("exponent", "S16"), ("method", "S32"), ("value", "f8"), ("error", "f8"), ("exact", "f8")])
        f.create_dataset("exponents", data=np.array([(a.encode(), m.encode(), v, e, x) for a, m, v, e, x in table],
                                                    dtype=dt))
        g = f.create_group("levels")
        g.create_dataset("L", data=Ls)
        for k, dd in level_stats["per_level"].items():
            h = g.create_group(f"L{int(Ls[k])}")
            for q, v in dd.items():
                h.create_dataset(q, data=v)
        g.attrs["files"] = json.dumps([p for p, _, _ in level_stats["paths"]])
        fl = f.create_group("flow")
        fl.create_dataset("mu2", data=mu2_grid)
        fl.create_dataset("mu2_prime", data=flow_vals)
        qs = ("mu2_c", "U_c", "lambda", "nu", "gamma_nu", "beta_nu")
        dp = np.dtype([("L_small", "i8"), ("L_large", "i8")] + [(n_, "f8") for q in qs for n_ in (q, "d" + q)])
        f.create_dataset("pairs", data=np.array([(p_["L_small"], p_["L_large"], *[x for q in qs for x in p_[q]])
                                                 for p_ in pairs], dtype=dp))
        model.save(f.create_group("weights"))
        f.attrs["weights_file"] = weights_path


def plot_configs(stem, Ls, level_paths, max_pixels=256):
    """One configuration per size (first record of each level file or its snapshot), read with a
    stride so that at most max_pixels per side are loaded: <stem>_configs.png."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [f"{stem}_direct_L{int(Ls[0])}.h5"] + [p if st else (f"{p[:-3]}_snapshot.h5" if sn else None)
                                                  for p, st, sn in level_paths]
    panels = [(int(L), p) for L, p in zip(Ls, paths) if p and os.path.exists(p)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.5))
    axes = np.atleast_1d(axes)
    for ax, (L, p) in zip(axes, panels):
        with h5py.File(p, "r") as f:
            step = max(1, L // max_pixels)
            img = f["configs"][0, ::step, ::step]
        ax.imshow(img, cmap="RdBu_r", vmin=-2.5, vmax=2.5, interpolation="nearest")
        ax.set_title(f"L = {L}" + (f" (every {step}th site)" if step > 1 else ""), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(f"{stem}_configs.png", dpi=90)
    plt.close(fig)


def _plots(stem, level_stats, Ls, small, large, small_up, mu2_0, mu2_c, mu2_grid, flow_vals, lam, window, ex, dex,
           mu2_star, gain, b, d, smaller=()):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qftml.stats import finite_size as critical
    plot_configs(stem, Ls, level_stats["paths"])

    # observables vs L: measured on the upscaled ensembles, and the whole L ensemble carried by s^k
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    Lf = np.geomspace(Ls[0], Ls[-1], 50)
    series = []
    for k in range(len(Ls)):
        dd = level_stats["per_level"][k]
        series.append(critical.Series("lvl", {"abs_m": dd["abs_m"], "m2": dd["m2"], "m4": dd["m4"],
                                              "sum_phi2": dd["sum_phi2_src"]}, int(Ls[k]) ** 2, int(Ls[k]), mu2_0))
    moms = [critical.moments(s, mu2_star - mu2_0) for s in series]
    axes[0].loglog(Ls, [m["chi"] for m in moms], "o", color="k", ms=5, label="measured, mu2*")
    axes[1].loglog(Ls, [m["abs_m"] for m in moms], "o", color="k", ms=5, label="measured, mu2*")
    axes[2].semilogx(Ls, [m["U"] for m in moms], "o", color="k", ms=5, label="measured, mu2*")
    if np.isfinite(gain):
        kk = np.log(Lf / Ls[0]) / np.log(b)
        for shift, color in ((-0.01, "C0"), (0.0, "C1"), (0.01, "C2")):
            m0 = critical.moments(large, mu2_star + shift - mu2_0)
            lab = f"all {large.n} x s^k, mu2 = {mu2_star + shift:.4f}"
            axes[0].loglog(Lf, m0["chi"] * (b ** d * gain ** 2) ** kk, "-", color=color, label=lab)
            axes[1].loglog(Lf, m0["abs_m"] * gain ** kk, "-", color=color, label=lab)
            axes[2].semilogx(Lf, np.full_like(Lf, m0["U"]), "-", color=color, label=lab)
    axes[0].loglog(Lf, moms[0]["chi"] * (Lf / Ls[0]) ** 1.75, ":", color="k", label="slope 7/4")
    axes[1].loglog(Lf, moms[0]["abs_m"] * (Lf / Ls[0]) ** -0.125, ":", color="k", label="slope -1/8")
    for ax, name in zip(axes, (r"$\chi$", r"$\langle|m|\rangle$", "U")):
        ax.set_xlabel("L")
        ax.set_ylabel(name)
        ax.legend(fontsize=7)
    axes[2].set_ylim(0, 0.7)
    fig.suptitle(f"upscaled ensembles: points {series[0].n} configurations per size at mu2* = {mu2_star:.4f}; "
                 f"lines: the whole L ensemble with m_k = s^k m_0 (s = {gain:.4f}) at mu2* and mu2* +- 0.01",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{stem}_fss.png", dpi=110)
    plt.close(fig)

    # Binder curves and the flow
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    grid = np.linspace(mu2_0 - window, mu2_0 + window, 41)
    for s, lab in ((small, f"direct L={small.L}"), (large, f"direct L={large.L}"),
                   (small_up, f"upscaled {small.L}->{large.L}")):
        axes[0].plot(grid, [critical.moments(s, x - mu2_0)["U"] for x in grid], label=lab)
    for s in smaller:
        axes[0].plot(grid, [critical.moments(s, x - mu2_0)["U"] for x in grid], "--", label=f"direct L={s.L}")
    axes[0].axhline(0.61069, color="gray", lw=0.5, ls="--")    # 2D Ising U* on periodic L x L lattices
    axes[0].axvline(mu2_c, color="k", lw=0.5)
    axes[0].axvline(mu2_star, color="k", lw=0.5, ls=":")
    axes[0].set_xlabel("mu2")
    axes[0].set_ylabel("U")
    axes[0].legend(fontsize=8)
    axes[1].plot(mu2_grid, flow_vals, "o", label="Binder matching")
    axes[1].plot(mu2_grid, mu2_c + lam * (mu2_grid - mu2_c), "-", label=f"slope {lam:.3f}")
    axes[1].plot(mu2_grid, mu2_c + 0.5 * (mu2_grid - mu2_c), ":", label="nu = 1: slope 1/2")
    axes[1].plot(mu2_grid, mu2_grid, "k-", lw=0.5)
    axes[1].set_xlabel("mu2 (ensemble at L/b, upscaled)")
    axes[1].set_ylabel("mu2' (direct L, same U)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{stem}_flow.png", dpi=110)
    plt.close(fig)
