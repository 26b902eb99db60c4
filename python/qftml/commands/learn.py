"""`qftml learn CONFIG.toml [--replicas R] [--resume] [--set section.key=value ...] [--quiet]`.

Learn the couplings of an inhomogeneous action S by minimising F = <A - S>_p + F_S >= F_A
(DESIGN 1.3; the work is in qftml.learning.gradient, qftml.learning.optimizers, qftml.learning.free_energy).

Exports: HELP, add_arguments(parser), run(args) (the cli contract), load_learn_config,
         run_learn(cfg, replicas, resume, quiet, comm), plot_training(path, prefix).

Config sections: [lattice] shape, grid; [sampler] algorithm, thermalize (initial), hits, seed, step,
start; [target] as [action] (kappa, mu2, lam, h, extra, g, field, or couplings = "file.h5");
[model] init = "random" | "file", w_range/a_range/b_range/r_range (uniform draws; [x, x] is a
constant), couplings (init = "file"), learn, tied, extra ("" or "nnn"), b_floor; [training]
optimizer, lr, schedule, ..., epochs, samples, sweeps_between, thermalize_after_update, replicas,
precondition ("fisher" = block-diagonal natural gradient), f_every, f_nodes, f_samples,
f_thermalize, f_target, checkpoint_every; [output] path, plots.

Output file (HDF5, written by rank 0 unless stated):
    /history/<name> (n_epochs,)   epoch, lr, acceptance, a_minus_s (<A - S>_p), a_minus_s_err
                                  (naive), projected, time_{sampling,gradient,communication,total}
    /history/grad_norm/<family>   |dF/dtheta| per family
    /history/couplings/<family>/{mean,std,min,max}   after each epoch's update
    /free_energy/<name>           epoch, F, F_err, F_S, F_S_err, a_minus_s, a_minus_s_err
                                  (Gamma method); attrs F_A, F_A_err when training.f_target
    /checkpoints/epoch_<n>/<family>   full theta at checkpoints (gathered: small volumes)
    /comparison/<observable>      (S, dS, A, dA) when training.compare > 0: S and A sampled directly
    /couplings/<family>           the final couplings, each rank writing its hyperslab, with
                                  attributes field, extra_offsets: the file can seed `qftml sample`
The checkpoint "<path>.ckpt" holds couplings, optimiser state, every replica's field and counters.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

HELP = "learn an action S by minimising the variational free energy F = <A - S> + F_S >= F_A (KL(p||q))"


def _schema():
    from qftml.config import ACTION, LATTICE, OUTPUT, SAMPLER, Spec
    from qftml.learning.optimizers import OPTIMIZERS, SCHEDULES

    sampler = {k: SAMPLER[k] for k in ("algorithm", "thermalize", "hits", "seed", "step", "start")}
    model = {
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
        "seed": Spec("int", 1, min=0, help="seed of the random initial couplings"),
    }
    training = {
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
        "epochs": Spec("int", 100, min=1),
        "samples": Spec("int", 100, min=2, help="configurations per epoch (per replica)"),
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
    }
    output = dict(OUTPUT)
    output["plots"] = Spec("bool", True, help="write <path stem>_couplings.png and _histograms.png")
    return {"lattice": LATTICE, "sampler": sampler, "target": ACTION, "model": model, "training": training,
            "output": output}



def add_arguments(parser):
    from qftml.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--replicas", type=int, default=None,
                        help="split the ranks into R replicas (independent chains); R must divide the ranks")
    parser.add_argument("--resume", action="store_true", help="continue from <output.path>.ckpt")
    parser.epilog = "exit codes: 0 done, 2 invalid configuration or input (nothing written)"


def load_learn_config(path, overrides=(), comm=None) -> dict:
    from qftml.config import ConfigError, load_config

    cfg = load_config(path, _schema(), overrides, comm)
    m, t = cfg["model"], cfg["training"]
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
    if not cfg["output"]["path"]:
        errors.append("output.path is empty (give the HDF5 file to write)")
    if t["optimizer"] == "momentum" and not t["momentum"] < 1:
        errors.append(f"training.momentum = {t['momentum']} must be < 1")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return cfg


def run(args) -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    cfg = load_learn_config(args.config, args.overrides, comm)
    replicas = args.replicas if args.replicas is not None else cfg["training"]["replicas"]
    return run_learn(cfg, replicas=replicas, resume=args.resume, quiet=args.quiet, comm=comm)


# ----------------------------------------------------------------------------- set-up
def _build(cfg, comms):
    import qftml
    from qftml import learning as L
    from qftml.config import ConfigError
    from qftml.ensemble_generation import build_action

    lat = qftml.Lattice(cfg["lattice"]["shape"], comm=comms.domain, grid=cfg["lattice"]["grid"] or None)
    try:
        target = build_action({"action": cfg["target"]}, lat)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"[target]: {e}") from None
    m = cfg["model"]
    extra = [list(e) for e in qftml.engine.action.NNN_2D] if m["extra"] == "nnn" else []
    if m["init"] == "file":
        from qftml.io.couplings import read_couplings

        start, attrs = read_couplings(m["couplings"], lat)
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
                        field=cfg["target"]["field"], b_floor=m["b_floor"])
        model.action()
    except ValueError as e:
        raise ConfigError(f"[model]: {e}") from None
    return lat, target, model


def _optimizer(cfg):
    from qftml.learning import optimizers as O
    t = cfg["training"]
    sched = O.Schedule(t["schedule"], t["lr"], gamma=t["gamma"], tau=t["tau"], step_every=t["step_every"],
                       lr_min=t["lr_min"])
    return O.make_optimizer(t["optimizer"], sched, momentum=t["momentum"], beta1=t["beta1"], beta2=t["beta2"])


# ----------------------------------------------------------------------------- output
class _Log:
    """The training history in the output file (rank 0 of the world writes; reopened per write)."""

    def __init__(self, path, is_root):
        self.path, self.is_root = path, is_root

    def create(self, attrs):
        import h5py

        if self.is_root:
            with h5py.File(self.path, "w") as f:
                for k, v in attrs.items():
                    f.attrs[k] = v

    def truncate(self, n_epochs):
        import h5py

        if not self.is_root:
            return
        with h5py.File(self.path, "a") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and name.startswith("history/") and obj.maxshape[0] is None:
                    obj.resize((min(n_epochs, obj.shape[0]),))
            f.visititems(visit)
            if "free_energy" in f:
                keep = f["free_energy/epoch"][()] < n_epochs
                for ds in f["free_energy"].values():
                    data = ds[()][keep]
                    ds.resize((len(data),))
                    ds[...] = data

    def append(self, group, values: dict):
        import h5py

        if not self.is_root:
            return
        with h5py.File(self.path, "a") as f:
            for name, v in values.items():
                key = f"{group}/{name}"
                if key not in f:
                    f.create_dataset(key, shape=(0,), maxshape=(None,), dtype="f8", chunks=(256,))
                ds = f[key]
                ds.resize((ds.shape[0] + 1,))
                ds[-1] = v

    def set_attrs(self, group, attrs):
        import h5py

        if self.is_root:
            with h5py.File(self.path, "a") as f:
                g = f.require_group(group)
                for k, v in attrs.items():
                    g.attrs[k] = v

    def write_arrays(self, group, arrays):
        import h5py

        if self.is_root:
            with h5py.File(self.path, "a") as f:
                if group in f:
                    del f[group]
                g = f.create_group(group)
                for k, v in arrays.items():
                    g.create_dataset(k, data=v)


def _epoch_values(rec):
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


def _global_couplings(model, comms):
    """Full theta on world rank 0 (gathered over replica 0's domain; small volumes)."""
    from qftml.learning.trainer import gather_global

    if comms.replica != 0:
        return None
    return {k: gather_global(model.lattice, v) for k, v in model.local_couplings().items()}


def _write_final_couplings(path, model, comms):
    """/couplings/<family> by hyperslabs (replica 0's ranks write; the others wait)."""
    from qftml.io.ensembles import BlockFile, choose_write_path

    if comms.replica == 0:
        lat = model.lattice
        bf = BlockFile(path, "a", lat, choose_write_path(lat.comm))
        try:
            for fam, local in model.local_couplings().items():
                trailing = local.shape[lat.ndim:]
                if bf.owns_file and f"couplings/{fam}" in bf.file:
                    del bf.file[f"couplings/{fam}"]
                bf.create(f"couplings/{fam}", tuple(lat.shape) + trailing)
                bf.write_blocks(f"couplings/{fam}", (), local)
            bf.set_attrs(group="couplings", field=model.field, extra_offsets=json.dumps(model.extra_offsets))
        finally:
            bf.close()
    comms.world.Barrier()


# ----------------------------------------------------------------------------- checkpoints
def _write_checkpoint(path, trainer, comms, cfg):
    """Couplings, optimiser state, fields and counters, gathered on world rank 0 (small volumes)."""
    import h5py

    from qftml.learning.trainer import gather_global

    model, lat = trainer.model, trainer.model.lattice
    fields = comms.world.gather(trainer.field.gather(0), root=0)
    counters = comms.world.gather((comms.replica, comms.domain.rank, trainer.sweeps, trainer.step), root=0)
    theta = _global_couplings(model, comms)
    opt_state = {}
    for k, v in trainer.optimizer.state_dict().items():
        v = np.asarray(v)
        opt_state[k] = gather_global(lat, v) if v.ndim >= lat.ndim else v
    if comms.world.rank != 0:
        return
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["epoch"] = trainer.epoch
        f.attrs["shift"] = trainer.shift
        f.attrs["replicas"] = comms.replicas
        f.attrs["config"] = json.dumps(cfg)
        for fam, v in theta.items():
            f.create_dataset(f"couplings/{fam}", data=v)
        for k, v in opt_state.items():
            f.create_dataset(f"optimizer/{k}", data=v)
        for (rep, drank, sweeps, step), fld in zip(counters, fields):
            if drank == 0:
                g = f.create_group(f"replica_{rep}")
                g.create_dataset("field", data=fld)
                g.attrs["sweeps"], g.attrs["step"] = sweeps, step
    os.replace(tmp, path)


def _read_checkpoint(path, trainer, comms, cfg):
    import h5py

    from qftml import Field
    from qftml.config import ConfigError

    model, lat = trainer.model, trainer.model.lattice
    if not os.path.exists(path):
        raise ConfigError(f"--resume: no checkpoint {path}")
    with h5py.File(path, "r") as f:
        old = json.loads(f.attrs["config"])
        for section in ("lattice", "target", "model", "sampler"):
            o = {k: v for k, v in old[section].items() if k != "grid"}
            n = {k: v for k, v in cfg[section].items() if k != "grid"}
            if o != n:
                raise ConfigError(f"--resume: [{section}] differs from the checkpoint's ({o} vs {n})")
        if int(f.attrs["replicas"]) != comms.replicas:
            raise ConfigError(f"--resume: the checkpoint has {int(f.attrs['replicas'])} replicas, not {comms.replicas}")
        for fam in model.params:
            ds = f[f"couplings/{fam}"]
            model.params[fam][...] = ds[()].mean() if fam in model.tied else ds[lat.local_slices]
        state = {}
        for k, ds in f.get("optimizer", {}).items():
            state[k] = ds[lat.local_slices] if ds.ndim >= lat.ndim else ds[()]
        trainer.optimizer.load_state_dict(state)
        g = f[f"replica_{comms.replica}"]
        field = Field(lat)
        field.local = g["field"][lat.local_slices]  # setting the field refreshes its ghosts
        trainer.field = field
        trainer.sweeps, trainer.step = int(g.attrs["sweeps"]), float(g.attrs["step"])
        trainer.epoch = int(f.attrs["epoch"])
        trainer.shift = float(f.attrs["shift"])


# ----------------------------------------------------------------------------- the run
def run_learn(cfg, replicas=1, resume=False, quiet=False, comm=None) -> int:
    from mpi4py import MPI

    import qftml
    from qftml.learning import free_energy as FE
    from qftml import learning as L
    from qftml.collective import make_communicators
    from qftml.config import ConfigError

    comm = MPI.COMM_WORLD if comm is None else comm
    try:
        comms = make_communicators(comm, replicas)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    lat, target, model = _build(cfg, comms)
    comms.connect(lat)
    t, s, out = cfg["training"], cfg["sampler"], cfg["output"]
    trainer = L.Trainer(model, target, _optimizer(cfg), comms, seed=s["seed"], samples=t["samples"],
                        sweeps_between=t["sweeps_between"], thermalize=s["thermalize"],
                        thermalize_after_update=t["thermalize_after_update"], algorithm=s["algorithm"],
                        hits=s["hits"], step=s["step"], start=s["start"], precondition=t["precondition"],
                        damping=t["damping"], max_step=t["max_step"], damping_mode=t["damping_mode"])
    path = out["path"]
    ckpt = path + ".ckpt"
    log = _Log(path, comm.rank == 0)
    if resume:
        _read_checkpoint(ckpt, trainer, comms, cfg)
        if comm.rank == 0 and not os.path.exists(path):
            raise ConfigError(f"--resume: output file {path} is missing")
        log.truncate(trainer.epoch)
    else:
        log.create({"config": json.dumps(cfg), "version": qftml.__version__, "ranks": comm.size,
                    "replicas": comms.replicas, "grid": list(lat.grid), "shape": list(lat.shape),
                    "command": "learn"})
        theta0 = _global_couplings(model, comms)
        if comm.rank == 0:
            log.write_arrays("checkpoints/epoch_0", theta0)
    comm.Barrier()
    fe_kw = dict(extra_offsets=model.extra_offsets, field=model.field, nodes=t["f_nodes"], samples=t["f_samples"],
                 thermalize=t["f_thermalize"], sweeps_between=t["sweeps_between"], algorithm=s["algorithm"],
                 hits=s["hits"], comms=comms)
    if t["f_target"] and not resume:
        tc = target.couplings()
        fa = FE.free_energy_ti(lat, tc, seed=s["seed"] + 555, **{**fe_kw, "extra_offsets": target.extra_offsets})
        log.set_attrs("free_energy", {"F_A": fa.value, "F_A_err": fa.error})
        if comm.rank == 0 and not quiet:
            print(f"F_A = {fa.value:.4f} +- {fa.error:.4f} (thermodynamic integration)", flush=True)
    epochs = t["epochs"]
    bar = None
    if comm.rank == 0 and not quiet:
        from tqdm import tqdm

        bar = tqdm(total=epochs, initial=trainer.epoch, desc="learn", unit="epoch", file=sys.stderr)
    f_every, c_every = t["f_every"], t["checkpoint_every"]
    while trainer.epoch < epochs:
        e = trainer.epoch
        want_f = e == epochs - 1 or (f_every and e % f_every == 0)
        before = {k: v.copy() for k, v in model.local_couplings().items()} if want_f else None  # pre-update
        rec = trainer.run_epoch()
        log.append("history", _epoch_values(rec))
        if want_f:
            series = comms.cross.allgather(rec.result.series) if comms.replicas > 1 else [rec.result.series]
            a_s, a_s_err = L.gamma_error([-np.asarray(x) for x in series])
            fs = FE.free_energy_ti(lat, before, seed=s["seed"] + 1000 + e, **fe_kw)
            f_val, f_err = FE.variational_bound(a_s, a_s_err, fs)
            log.append("free_energy", {"epoch": e, "F": f_val, "F_err": f_err, "F_S": fs.value, "F_S_err": fs.error,
                                       "a_minus_s": a_s, "a_minus_s_err": a_s_err})
            if bar is not None:
                bar.write(f"epoch {e}: F = {f_val:.4f} +- {f_err:.4f}  (<A-S> = {a_s:.4f} +- {a_s_err:.4f}, "
                          f"F_S = {fs.value:.4f} +- {fs.error:.4f})")
        if (c_every and trainer.epoch % c_every == 0) or trainer.epoch == epochs:
            theta = _global_couplings(model, comms)
            if comm.rank == 0:
                log.write_arrays(f"checkpoints/epoch_{trainer.epoch}", theta)
            _write_checkpoint(ckpt, trainer, comms, cfg)
        if bar is not None:
            st = rec.stats
            bar.set_postfix_str(" ".join(f"{f}={st[f]['mean']:.4f}+-{st[f]['std']:.3f}" for f in ("w", "a", "b")
                                         if f in st) + f" A-S={rec.a_minus_s:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    _write_final_couplings(path, model, comms)
    if t["compare"]:
        table = compare_observables(lat, trainer.current_action(), target, t["compare"], t["sweeps_between"],
                                    s, comms)
        if comm.rank == 0:
            import h5py

            with h5py.File(path, "a") as f:
                g = f.require_group("comparison")
                for name, row in table.items():
                    g.create_dataset(name, data=np.array(row))
                g.attrs["columns"] = "S value, S error, A value, A error"
            if not quiet:
                print(format_comparison(table), flush=True)
    if out["plots"] and comm.rank == 0:
        prefix = os.path.splitext(path)[0]
        for p in plot_training(path, prefix):
            if not quiet:
                print(f"wrote {p}", flush=True)
    comm.Barrier()
    return 0


# ----------------------------------------------------------------------------- S versus A
COMPARED = ("abs_m", "m2", "chi", "binder", "phi2", "link_nn", "link_extra")


def compare_observables(lat, action_s, target, n, sweeps_between, s, comms):
    """Observables of S and of A, each sampled directly (n measurements, replicas pooled):
    <|m|>, <m^2>, chi = V (<m^2> - <|m|>^2), Binder U = 1 - <m^4>/(3 <m^2>^2), <phi^2> per site,
    <phi_x phi_{x+mu}> per nearest-neighbour link and per extra link of A (e.g. nnn). Errors by the
    Gamma method. Returns {name: (S, dS, A, dA)} (NaN where a quantity does not exist)."""
    import pyerrors as pe

    import qftml

    V, d = lat.volume, lat.ndim
    out = {}
    for tag, act in (("S", action_s), ("A", target)):
        sampler = qftml.Sampler(act, seed=s["seed"] + 31337 + 7 * comms.replica, algorithm=s["algorithm"],
                                hits=s["hits"], step=s["step"])
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
        names = [f"{tag}|r{i}" for i in range(len(reps))] if len(reps) > 1 else [tag]
        obs = [pe.Obs([r[:, j] for r in reps], names) for j in range(rows.shape[1] - 1)]
        abs_m, m2, m4, phi2, link = obs
        derived = {"abs_m": abs_m, "m2": m2, "chi": V * (m2 - abs_m * abs_m), "binder": 1 - m4 / (3 * m2 * m2),
                   "phi2": phi2, "link_nn": link}
        if not np.isnan(rows[0, 5]):
            derived["link_extra"] = pe.Obs([r[:, 5] for r in reps], names)
        for k in COMPARED:
            o = derived.get(k)
            if o is None:
                val = (np.nan, np.nan)
            else:
                o.gamma_method()
                val = (float(o.value), float(o.dvalue))
            out.setdefault(k, []).extend(val)
    return out


def format_comparison(table) -> str:
    lines = [f"{'observable':12s} {'S (learned)':>22s} {'A (target)':>22s} {'(S-A)/sigma':>12s}"]
    for k, (s, ds, a, da) in table.items():
        if np.isnan(s) and np.isnan(a):
            continue
        z = (s - a) / np.hypot(ds, da) if np.hypot(ds, da) > 0 else np.nan
        lines.append(f"{k:12s} {s:12.5f} +- {ds:7.5f} {a:12.5f} +- {da:7.5f} {z:12.2f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots
def plot_training(path, prefix, targets=None):
    """<prefix>_couplings.png (every family vs epoch, log epoch axis: the paper's Fig. 2) and
    <prefix>_histograms.png (initial and learned inhomogeneous couplings). Returns the paths written."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with h5py.File(path, "r") as f:
        hist = f["history"]
        epoch = hist["epoch"][()] + 1
        fams = [k for k in ("w", "g", "a", "b", "r") if k in hist["couplings"]]
        stats = {k: {s: hist[f"couplings/{k}/{s}"][()] for s in ("mean", "std", "min", "max")} for k in fams}
        final = {k: f[f"couplings/{k}"][()] for k in fams if f"couplings/{k}" in f}
        first = f["checkpoints/epoch_0"] if "checkpoints/epoch_0" in f else {}
        initial = {k: first[k][()] for k in fams if k in first}
        cfg = json.loads(f.attrs["config"])
    if targets is None:
        from qftml.engine.action import homogeneous_couplings

        tg = cfg["target"]
        targets = {} if tg["couplings"] else homogeneous_couplings(len(cfg["lattice"]["shape"]), tg["kappa"], tg["mu2"],
                                                                    tg["lam"], tg["h"])
    learned = [k for k in fams if k in cfg["model"]["learn"]]
    fig, axes = plt.subplots(1, len(learned), figsize=(4 * len(learned), 3.4), squeeze=False)
    for ax, k in zip(axes[0], learned):
        s = stats[k]
        ax.fill_between(epoch, s["min"], s["max"], color="C0", alpha=0.15, label="min-max")
        ax.fill_between(epoch, s["mean"] - s["std"], s["mean"] + s["std"], color="C0", alpha=0.35, label="mean +- std")
        ax.plot(epoch, s["mean"], color="C0", lw=1.2, label="mean")
        if k in targets:
            ax.axhline(targets[k], color="k", ls="--", lw=1, label="target")
        ax.set_xscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(k)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out = [f"{prefix}_couplings.png"]
    fig.savefig(out[0], dpi=90)
    plt.close(fig)
    fig, axes = plt.subplots(2, len(learned), figsize=(4 * len(learned), 5.6), squeeze=False)
    for col, k in enumerate(learned):
        top, bottom = axes[0][col], axes[1][col]
        v0 = np.ravel(initial.get(k, []))
        if v0.size:
            top.hist(v0, bins=40, color="C0")
        if k in targets:
            top.axvline(targets[k], color="k", ls="--", lw=1, label="target")
        top.set_title(f"initial {k}")
        v = np.ravel(final.get(k, []))
        if k in targets:
            bottom.hist(v - targets[k], bins=40, color="C1")
            bottom.axvline(0.0, color="k", ls="--", lw=1)
            bottom.set_title(f"learned {k} - target ({k} = {targets[k]:g})")
        else:
            bottom.hist(v, bins=40, color="C1")
            bottom.set_title(f"learned {k}")
        bottom.ticklabel_format(axis="x", style="sci", scilimits=(-2, 2))
    fig.tight_layout()
    out.append(f"{prefix}_histograms.png")
    fig.savefig(out[1], dpi=90)
    plt.close(fig)
    return out


__all__ = ["HELP", "add_arguments", "run", "load_learn_config", "run_learn", "plot_training", "compare_observables",
           "format_comparison"]
