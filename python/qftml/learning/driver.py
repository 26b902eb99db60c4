"""The `qftml learn` run (DESIGN 1.3), and the pieces every trainer shares (`fit`, `network`).

Exports:
    learn_schema() -> {section: {key: Spec}}     the configuration of `qftml learn`
    load_learn_config(path, overrides=(), comm=None) -> cfg   validated, every rank agrees
    optimizer_schema() -> {key: Spec}            the optimiser keys of [training] (shared by trainers)
    build_optimizer(training) -> optimiser       from those keys (qftml.learning.optimizers)
    run_learn(cfg, replicas=1, resume=False, quiet=False, comm=None) -> LearnResult   (failure_policy)
    learn_outputs(cfg) -> [file]                 what it writes (checked by config.check_outputs first)
    LearnResult                                  path, checkpoint, epochs, stats, learned, free_energy,
                                                 f_target, comparison, plots
    make_trainer_communicators(comm, replicas) -> Communicators   ConfigError if R does not divide the ranks
    model_schema() -> {key: Spec}                the [model] keys (shared by trainers: learn, fit)
    model_errors(model_section) -> [messages]    their cross-key checks
    build_model(model_section, lattice, field) -> Model   random or file initial couplings
    write_model_couplings(path, model, comms, group="couplings")  every family of the model under
                                                 <group>/<family>: replica 0's ranks write hyperslabs
                                                 into the existing file, the other replicas wait
    save_trainer(path, trainer, comms, physics, config)   the trainer checkpoint (atomic, hyperslabs)
    resume_trainer(path, trainer, comms, physics)         restore it; ConfigError on a physics mismatch
    trainer_physics(cfg, sections) -> dict       the config sections a resume must agree on (no grid)
    free_energy_estimate(lat, couplings, cfg, comms, stream) -> FreeEnergyResult   F by TI, learn's keys
    compare_observables(lat, action_s, target, n, sweeps_between, sampler_cfg, comms) -> table
    format_comparison(table) -> str
    HISTORY_GROUPS                               the History layout of `learn` (per-epoch, sparse)

Output file of `learn` (docs/learning.md): /history (one row per epoch, qftml.io.history),
/free_energy (rows at the estimated epochs), /checkpoints/epoch_<n>/<family> and /couplings/<family>
(hyperslabs), /comparison/<observable>. The checkpoint "<path>.ckpt" is a trainer checkpoint of
qftml.io.checkpoints: learned couplings and per-site optimiser moments as hyperslabs, every replica's
field as /fields[replica], counters and the config as attributes.

Random streams (qftml.engine.rng): chains derive_seed(seed, "learn_chain", replica); TI node i of
the estimate at epoch e derive_seed(seed, "ti_node", e, i), of F_A (TARGET_STREAM, i); comparison
chains derive_seed(seed, "compare_chain", replica, 0 for S | 1 for A); initial couplings
rng.uniform(model.seed, "couplings_init", global site, family, component).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field as dc_field

import numpy as np

HISTORY_GROUPS = {"per_epoch": ("history",), "sparse": ("free_energy",)}
COMPARED = ("abs_m", "m2", "chi", "binder", "phi2", "link_nn", "link_extra")


# ----------------------------------------------------------------------------- configuration
def optimizer_schema() -> dict:
    from qftml.config import Spec
    from qftml.learning.optimizers import OPTIMIZERS, SCHEDULES

    return {
        "optimizer": Spec("str", "sgd", choices=OPTIMIZERS),
        "lr": Spec("float", 0.1, min=0.0, min_exclusive=True, help="learning rate eta"),
        "schedule": Spec("str", "constant", choices=SCHEDULES),
        "gamma": Spec("float", 1.0, min=0.0, min_exclusive=True),
        "tau": Spec("float", 100.0, min=0.0, min_exclusive=True),
        "step_every": Spec("int", 100, min=1),
        "lr_min": Spec("float", 0.0, min=0.0),
        "momentum": Spec("float", 0.9, min=0.0),
        "beta1": Spec("float", 0.9, min=0.0),
        "beta2": Spec("float", 0.999, min=0.0),
        "precondition": Spec("str", "fisher", choices=("none", "fisher"),
                             help="'fisher': natural gradient with the site blocks of Cov(dS/dtheta)"),
        "damping": Spec("float", 0.1, min=0.0, help="Fisher damping (relative to the block's mean diagonal)"),
        "damping_mode": Spec("str", "mean", choices=("mean", "diagonal"),
                             help="Fisher damping: 'mean' diagonal of each block, or each 'diagonal' element"),
        "max_step": Spec("float", 0.0, min=0.0, help="clip each coupling's change per epoch to this (0: off)"),
    }


def build_optimizer(t: dict):
    from qftml.learning import optimizers as O

    sched = O.Schedule(t["schedule"], t["lr"], gamma=t["gamma"], tau=t["tau"], step_every=t["step_every"],
                       lr_min=t["lr_min"])
    return O.make_optimizer(t["optimizer"], sched, momentum=t["momentum"], beta1=t["beta1"], beta2=t["beta2"])


def learn_schema() -> dict:
    from qftml.config import ACTION, LATTICE, OUTPUT, SAMPLER, Spec

    sampler = {k: SAMPLER[k] for k in ("algorithm", "thermalize", "hits", "seed", "step", "start", "cluster",
                                        "cluster_every")}
    training = dict(optimizer_schema())
    training.update({
        "epochs": Spec("int", 100, min=1),
        "samples": Spec("int", 100, min=5, help="configurations per epoch (per replica; the Gamma method needs >= 5)"),
        "sweeps_between": Spec("int", 2, min=1),
        "thermalize_after_update": Spec("int", 5, min=0),
        "replicas": Spec("int", 1, min=1, help="independent chains (--replicas overrides)"),
        "f_every": Spec("int", 0, min=0, help="estimate F every n epochs (0: only at the end)"),
        "f_nodes": Spec("int", 8, min=2),
        "f_samples": Spec("int", 200, min=10),
        "f_thermalize": Spec("int", 200, min=0),
        "f_target": Spec("bool", False, help="also estimate F_A (TI) to report KL = F - F_A"),
        "checkpoint_every": Spec("int", 0, min=0, help="epochs between checkpoints (0: only at the end)"),
        "compare": Spec("int", 0, min=0, help="at the end, measure observables of S and of A (sampled "
                                              "directly) on this many configurations each (0: off)"),
    })
    output = dict(OUTPUT)
    output["plots"] = Spec("bool", True, help="write <path stem>_couplings.png and _histograms.png")
    return {"lattice": LATTICE, "sampler": sampler, "target": ACTION, "model": model_schema(), "training": training,
            "output": output}


def model_schema() -> dict:
    from qftml.config import SEED_MAX, Spec

    return {
        "init": Spec("str", "random", choices=("random", "file"), help="random ranges or a couplings file"),
        "couplings": Spec("str", "", help="HDF5 file with /couplings (init = 'file')"),
        "w_range": Spec("list[float]", [0.5, 1.5]),
        "a_range": Spec("list[float]", [1.0, 2.0]),
        "b_range": Spec("list[float]", [0.1, 0.3]),
        "r_range": Spec("list[float]", [0.0, 0.0]),
        "learn": Spec("list[str]", ["w", "a", "b"], help="families that are trained"),
        "tied": Spec("list[str]", [], help="learned families shared by every site/link"),
        "extra": Spec("str", "", choices=("", "nnn"), help="extra links of S"),
        "b_floor": Spec("float", 1e-3, min=0.0, help="project b >= b_floor after updates (0: off)"),
        "seed": Spec("int", 1, min=0, max=SEED_MAX, help="seed of the random initial couplings"),
    }


def model_errors(m: dict) -> list:
    errors = []
    for key in ("w_range", "a_range", "b_range", "r_range"):
        if len(m[key]) != 2 or m[key][0] > m[key][1]:
            errors.append(f"model.{key} = {m[key]} must be [low, high] with low <= high")
    if m["init"] == "file" and not m["couplings"]:
        errors.append("model.init = 'file' needs model.couplings")
    if m["b_range"][0] < 0 or (m["b_range"][0] == 0 and m["b_range"][1] > 0):
        errors.append(f"model.b_range = {m['b_range']}: b must be > 0 everywhere (or [0, 0] for a Gaussian S)")
    for key in ("learn", "tied"):
        bad = [f for f in m[key] if f not in ("w", "g", "a", "b", "r")]
        if bad:
            errors.append(f"model.{key} has unknown families {bad} (allowed: w, g, a, b, r)")
    if "g" in m["learn"] and not m["extra"]:
        errors.append("model.learn contains 'g' but the model has no extra links (model.extra = 'nnn')")
    return errors


def load_learn_config(path, overrides=(), comm=None) -> dict:
    from qftml.config import ConfigError, load_config

    cfg = load_config(path, learn_schema(), overrides, comm)
    errors = model_errors(cfg["model"])
    if not cfg["output"]["path"]:
        errors.append("output.path is empty (give the HDF5 file to write)")
    t = cfg["training"]
    if t["optimizer"] == "momentum" and not t["momentum"] < 1:
        errors.append(f"training.momentum = {t['momentum']} must be < 1")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return cfg


# ----------------------------------------------------------------------------- shared pieces
def make_trainer_communicators(comm, replicas: int):
    from qftml.collective import make_communicators
    from qftml.config import ConfigError

    try:
        return make_communicators(comm, replicas)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def write_model_couplings(path, model, comms, group: str = "couplings") -> None:
    """Collective over comms.world: replica 0's domain writes (replicas hold the same couplings)."""
    from qftml.io.couplings import write_coupling_blocks

    if comms.replica == 0:
        attrs = {"field": model.field, "extra_offsets": json.dumps(model.extra_offsets)}
        write_coupling_blocks(path, model.lattice, model.local_couplings(), attrs, mode="a", group=group)
    comms.world.Barrier()


def trainer_physics(cfg: dict, sections) -> dict:
    """What a resume must agree on: the given config sections, without the process grid."""
    out = {sec: {k: v for k, v in cfg[sec].items() if k != "grid"} for sec in sections}
    if out.get("sampler", {}).get("cluster") == "none":  # as before clusters existed: old checkpoints resume
        out["sampler"].pop("cluster")
        out["sampler"].pop("cluster_every", None)
    return json.loads(json.dumps(out))


def save_trainer(path, trainer, comms, physics: dict, config: dict) -> None:
    from qftml.io.checkpoints import write_trainer_checkpoint

    field, state, replica_state, arrays = trainer.checkpoint_contents()
    state = dict(state, physics=physics, config=config, replicas=comms.replicas, ranks=comms.world.size)
    write_trainer_checkpoint(path, comms, field, state, replica_state, arrays)


def resume_trainer(path, trainer, comms, physics: dict) -> None:
    from qftml.config import ConfigError
    from qftml.io.checkpoints import CheckpointError, check_state, physics_differences, read_trainer_checkpoint

    error = None
    try:
        ckpt = read_trainer_checkpoint(path, comms, trainer.model.lattice)  # the same verdict on every rank
        # counters and numbers first: an edited checkpoint is refused before anything is used
        check_state(path, ckpt.state, counts=("epoch",), finite=("shift",))
        check_state(path, ckpt.replica_state, counts=("sweeps",), positive=("step",))
    except CheckpointError as e:
        error = str(e)
    error = next((e for e in comms.world.allgather(error) if e), None)  # replica states differ per replica
    if error:
        raise ConfigError(f"--resume: {error}")
    diffs = physics_differences(ckpt.state["physics"], physics)
    if diffs:
        raise ConfigError("--resume: the configuration differs from the checkpoint's:\n  " + "\n  ".join(diffs))
    trainer.restore(ckpt)


def free_energy_estimate(lat, couplings, cfg, comms, stream, extra_offsets=None):
    """F of `couplings` by thermodynamic integration with learn's [training] f_* keys."""
    from qftml.learning.free_energy import free_energy_ti

    t, s = cfg["training"], cfg["sampler"]
    return free_energy_ti(lat, couplings, extra_offsets=extra_offsets or (), field=cfg["target"]["field"],
                          nodes=t["f_nodes"], samples=t["f_samples"], thermalize=t["f_thermalize"],
                          sweeps_between=t["sweeps_between"], algorithm=s["algorithm"], hits=s["hits"],
                          comms=comms, seed=s["seed"], stream=stream, cluster=s.get("cluster", "none"),
                          cluster_every=s.get("cluster_every", 1))


# ----------------------------------------------------------------------------- set-up
def _build(cfg, comms):
    import qftml
    from qftml.config import ConfigError
    from qftml.ensemble_generation import build_action

    lat = qftml.Lattice(cfg["lattice"]["shape"], comm=comms.domain, grid=cfg["lattice"]["grid"] or None)
    try:
        target = build_action(cfg, lat, section="target")
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"[target]: {e}") from None
    model = build_model(cfg["model"], lat, cfg["target"]["field"])
    return lat, target, model


def build_model(m: dict, lat, field: str):
    """The Model of a validated [model] section (learn's keys) on `lat`: random or file couplings;
    ConfigError for a couplings file that does not fit or a model that is not normalisable."""
    import qftml
    from qftml import learning as L
    from qftml.config import ConfigError

    extra = [list(e) for e in qftml.engine.action.NNN_2D] if m["extra"] == "nnn" else []
    if m["init"] == "file":
        from qftml.io.couplings import read_couplings

        if not os.path.exists(m["couplings"]):
            raise ConfigError(f"model.couplings = {m['couplings']!r}: no such file")
        try:
            start, attrs = read_couplings(m["couplings"], lat)
        except (ValueError, OSError, KeyError) as e:
            raise ConfigError(f"model.couplings = {m['couplings']!r}: {e}") from None
        if [list(e) for e in attrs["extra_offsets"]] != extra:
            raise ConfigError(f"model.couplings has extra links {attrs['extra_offsets']}, model.extra gives {extra}")
    else:
        ranges = {f: (m[f + "_range"] if m[f + "_range"][0] != m[f + "_range"][1] else m[f + "_range"][0])
                  for f in ("w", "a", "b", "r")}
        if extra:
            ranges["g"] = 0.0
        start = L.random_couplings(lat, m["seed"], ranges, extra)
    try:
        model = L.Model(lat, start, learn=m["learn"], tied=m["tied"], extra_offsets=extra,
                        field=field, b_floor=m["b_floor"])
        model.action()
    except ValueError as e:
        raise ConfigError(f"[model]: {e}") from None
    return model


def _epoch_values(rec) -> dict:
    out = {"epoch": rec.epoch, "lr": rec.lr, "acceptance": rec.acceptance, "a_minus_s": rec.a_minus_s,
           "a_minus_s_err": rec.a_minus_s_err, "projected": rec.projected, "clipped": rec.clipped}
    for k in ("sampling", "gradient", "communication", "total"):
        out[f"time_{k}"] = rec.timings[k]
    for fam, v in rec.grad_norms.items():
        out[f"grad_norm/{fam}"] = v
    for fam, st in rec.stats.items():
        for k, v in st.items():
            out[f"couplings/{fam}/{k}"] = v
    return out


@dataclass
class LearnResult:
    path: str
    checkpoint: str
    epochs: int                                  # epochs done (all of them)
    stats: dict                                  # final coupling stats per family (mean, std, min, max)
    learned: list = dc_field(default_factory=list)   # the trained families
    free_energy: dict | None = None              # the last F estimate (epoch, F, F_err, F_S, ...)
    f_target: tuple | None = None                # (F_A, error) when training.f_target
    comparison: dict | None = None               # {observable: (S, dS, A, dA)} when training.compare
    plots: list = dc_field(default_factory=list)


# ----------------------------------------------------------------------------- the run
def learn_outputs(cfg) -> list:
    """The files `qftml learn` writes: output.path, its checkpoint, the plots (output.plots)."""
    from qftml.io.checkpoints import checkpoint_path

    path = cfg["output"]["path"]
    plots = [f"{os.path.splitext(path)[0]}_{p}.png" for p in ("couplings", "histograms")]
    return [path, checkpoint_path(path)] + (plots if cfg["output"]["plots"] else [])


def run_learn(cfg, replicas=1, resume=False, quiet=False, comm=None) -> LearnResult:
    """The whole `qftml learn` run (collective, under collective.failure_policy): every check (config,
    target, model, outputs) before anything is written; the writer lock of output.path is held for the
    whole run (qftml.io.locking: a second writer, or a --resume of a live run, is refused)."""
    from mpi4py import MPI

    from qftml.collective import failure_policy

    comm = MPI.COMM_WORLD if comm is None else comm
    with failure_policy(comm):
        return _run_learn(cfg, replicas, resume, quiet, comm)


def _run_learn(cfg, replicas, resume, quiet, comm) -> LearnResult:
    from qftml import learning as L
    from qftml.config import check_cluster, check_outputs, output_problems
    from qftml.io.checkpoints import checkpoint_path
    from qftml.io.locking import hold_output, release_output

    comms = make_trainer_communicators(comm, replicas)
    lat, target, model = _build(cfg, comms)
    comms.connect(lat)
    t, s, out = cfg["training"], cfg["sampler"], cfg["output"]
    check_cluster(s, comms.domain.size)
    trainer = L.Trainer(model, target, build_optimizer(t), comms, seed=s["seed"], samples=t["samples"],
                        sweeps_between=t["sweeps_between"], thermalize=s["thermalize"],
                        thermalize_after_update=t["thermalize_after_update"], algorithm=s["algorithm"],
                        hits=s["hits"], step=s["step"], start=s["start"], precondition=t["precondition"],
                        damping=t["damping"], max_step=t["max_step"], damping_mode=t["damping_mode"],
                        cluster=s.get("cluster", "none"), cluster_every=s.get("cluster_every", 1))
    path, ckpt = out["path"], checkpoint_path(out["path"])
    physics = trainer_physics(cfg, ("lattice", "target", "model", "sampler"))
    # the one output rule, before anything is written; --resume continues (and replaces) its own files
    required = [(ckpt, "checkpoint"), (path, "output file")] if resume else ()
    check_outputs(learn_outputs(cfg), out["overwrite"] or resume, comm, require=required)
    # one writer per output: the lock, then the same output rule again under it (runs started at once)
    lock = hold_output(path, comm, "qftml learn --resume" if resume else "qftml learn",
                       lambda: "\n  ".join(output_problems(learn_outputs(cfg), out["overwrite"] or resume,
                                                           "output.path", path, require=required)) or None)
    try:
        return _learn_locked(cfg, comms, lat, target, model, trainer, physics, resume, quiet, comm)
    finally:
        release_output(lock)


def _learn_locked(cfg, comms, lat, target, model, trainer, physics, resume, quiet, comm) -> LearnResult:
    import qftml
    from qftml.io.checkpoints import checkpoint_path
    from qftml.io.history import History
    from qftml.learning.free_energy import TARGET_STREAM
    from qftml.progress import Progress

    t, s, out = cfg["training"], cfg["sampler"], cfg["output"]
    path, ckpt = out["path"], checkpoint_path(out["path"])
    history = History(path, comm, **HISTORY_GROUPS)
    result = LearnResult(path=path, checkpoint=ckpt, epochs=0, stats={})
    if resume:
        resume_trainer(ckpt, trainer, comms, physics)
        history.truncate(trainer.epoch)
    else:
        history.create({"config": json.dumps(cfg), "version": qftml.__version__, "ranks": comm.size,
                        "replicas": comms.replicas, "grid": list(lat.grid), "shape": list(lat.shape),
                        "command": "learn"})
        write_model_couplings(path, model, comms, "checkpoints/epoch_0")
    comm.Barrier()
    epochs, f_every, c_every = t["epochs"], t["f_every"], t["checkpoint_every"]
    with Progress(epochs, "learn", unit="epoch", comm=comm, quiet=quiet, initial=trainer.epoch) as progress:
        if t["f_target"] and not resume:
            fa = free_energy_estimate(lat, target.couplings(), cfg, comms, TARGET_STREAM, target.extra_offsets)
            history.set_attrs("free_energy", {"F_A": fa.value, "F_A_err": fa.error})
            result.f_target = (fa.value, fa.error)
            progress.write(f"F_A = {fa.value:.4f} +- {fa.error:.4f} (thermodynamic integration)")
        while trainer.epoch < epochs:
            e = trainer.epoch
            want_f = e == epochs - 1 or (f_every and e % f_every == 0)
            before = {k: v.copy() for k, v in model.local_couplings().items()} if want_f else None  # pre-update
            rec = trainer.run_epoch()
            history.append(_epoch_values(rec))
            if want_f:
                result.free_energy = row = _bound(lat, before, rec, cfg, comms, model.extra_offsets)
                history.append(row, "free_energy")
                progress.write(f"epoch {e}: F = {row['F']:.4f} +- {row['F_err']:.4f}  (<A-S> = {row['a_minus_s']:.4f} "
                               f"+- {row['a_minus_s_err']:.4f}, F_S = {row['F_S']:.4f} +- {row['F_S_err']:.4f})")
            if (c_every and trainer.epoch % c_every == 0) or trainer.epoch == epochs:
                write_model_couplings(path, model, comms, f"checkpoints/epoch_{trainer.epoch}")
                save_trainer(ckpt, trainer, comms, physics, cfg)
            st = rec.stats
            progress.update(trainer.epoch, **{f: f"{st[f]['mean']:.4f}+-{st[f]['std']:.3f}" for f in ("w", "a", "b")
                                              if f in st}, A_S=f"{rec.a_minus_s:.3f}")
    write_model_couplings(path, model, comms)
    result.epochs, result.stats, result.learned = trainer.epoch, model.stats(), list(model.learn)
    if t["compare"]:
        result.comparison = compare_observables(lat, trainer.current_action(), target, t["compare"],
                                                t["sweeps_between"], s, comms)
        _write_comparison(path, result.comparison, comm)
    if out["plots"]:
        from qftml.collective import on_root
        from qftml.plots.learning import plot_training

        result.plots = on_root(comm, lambda: plot_training(path, os.path.splitext(path)[0]), (ValueError, OSError))
    comm.Barrier()
    return result


def _bound(lat, before, rec, cfg, comms, extra_offsets) -> dict:
    """F = <A - S>_p + F_S at the couplings `before` the epoch's update (<A - S> from its samples,
    Gamma method with the replicas pooled; F_S by TI on the stream of this epoch)."""
    from qftml.learning.free_energy import variational_bound
    from qftml.stats.errors import mean_error

    series = comms.cross.allgather(rec.result.series) if comms.replicas > 1 else [rec.result.series]
    a_s, a_s_err = mean_error(-np.concatenate(series), "A_minus_S", [len(x) for x in series])
    fs = free_energy_estimate(lat, before, cfg, comms, rec.epoch, extra_offsets)
    f_val, f_err = variational_bound(a_s, a_s_err, fs)
    return {"epoch": rec.epoch, "F": f_val, "F_err": f_err, "F_S": fs.value, "F_S_err": fs.error,
            "a_minus_s": a_s, "a_minus_s_err": a_s_err}


def _write_comparison(path, table, comm):
    if comm.rank == 0:
        import h5py

        with h5py.File(path, "a") as f:
            g = f.require_group("comparison")
            for name, row in table.items():
                if name in g:
                    del g[name]
                g.create_dataset(name, data=np.array(row))
            g.attrs["columns"] = "S value, S error, A value, A error"


# ----------------------------------------------------------------------------- S versus A
def compare_observables(lat, action_s, target, n, sweeps_between, s, comms):
    """Observables of S and of A, each sampled directly (n measurements, replicas pooled):
    <|m|>, <m^2>, chi = V (<m^2> - <|m|>^2), Binder U = 1 - <m^4>/(3 <m^2>^2), <phi^2> per site,
    <phi_x phi_{x+mu}> per nearest-neighbour link and per extra link of A (e.g. nnn). Errors by the
    Gamma method (qftml.stats.errors, replicas as pyerrors replica ensembles). Returns
    {name: (S, dS, A, dA)} (NaN where a quantity does not exist)."""
    import qftml
    from qftml.engine.rng import derive_seed
    from qftml.stats import errors

    V, d = lat.volume, lat.ndim
    out = {}
    for which, (tag, act) in enumerate((("S", action_s), ("A", target))):
        sampler = qftml.Sampler(act, seed=derive_seed(s["seed"], "compare_chain", comms.replica, which),
                                algorithm=s["algorithm"], hits=s["hits"], step=s["step"],
                                cluster=s.get("cluster", "none"), cluster_every=s.get("cluster_every", 1))
        sampler.thermalize(max(s["thermalize"], 200))
        rows = []
        for _ in range(n):
            sampler.sweep(sweeps_between)
            m = qftml.measure(sampler.field, target)
            extra = m["link_sums"][d:]
            rows.append([m["abs_m"], m["m2"], m["m4"], m["sum_phi2"] / V, m["sum_links_nn"] / (d * V),
                         extra.mean() / V if extra.size else np.nan])
        rows = np.array(rows)
        reps = comms.cross.allgather(rows) if comms.replicas > 1 else [rows]
        pooled, lengths = np.concatenate(reps), [len(r) for r in reps]
        abs_m, m2, m4, phi2, link = (errors.obs(pooled[:, j], tag, lengths) for j in range(5))
        derived = {"abs_m": abs_m, "m2": m2, "chi": V * (m2 - abs_m * abs_m), "binder": 1 - m4 / (3 * m2 * m2),
                   "phi2": phi2, "link_nn": link}
        if not np.isnan(rows[0, 5]):
            derived["link_extra"] = errors.obs(pooled[:, 5], tag, lengths)
        for k in COMPARED:
            o = derived.get(k)
            summary = {"mean": np.nan, "error": np.nan} if o is None else errors.summarize(o)
            out.setdefault(k, []).extend((summary["mean"], summary["error"]))
    return out


def format_comparison(table) -> str:
    lines = [f"{'observable':12s} {'S (learned)':>22s} {'A (target)':>22s} {'(S-A)/sigma':>12s}"]
    for k, (s, ds, a, da) in table.items():
        if np.isnan(s) and np.isnan(a):
            continue
        z = (s - a) / np.hypot(ds, da) if np.hypot(ds, da) > 0 else np.nan
        lines.append(f"{k:12s} {s:12.5f} +- {ds:7.5f} {a:12.5f} +- {da:7.5f} {z:12.2f}")
    return "\n".join(lines)


__all__ = ["learn_schema", "load_learn_config", "optimizer_schema", "build_optimizer", "run_learn", "LearnResult",
           "learn_outputs", "make_trainer_communicators", "write_model_couplings",
           "model_schema", "model_errors", "build_model", "save_trainer", "resume_trainer",
           "trainer_physics", "free_energy_estimate", "compare_observables", "format_comparison", "HISTORY_GROUPS"]
