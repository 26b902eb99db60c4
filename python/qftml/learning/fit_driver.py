"""The `qftml fit` run: maximum likelihood of data, minimum KL(q||p) (DESIGN 1.5).

Exports:
    fit_schema() -> {section: {key: Spec}}       [lattice] [sampler] [model] [data] [training] [output]
    load_fit_config(path, overrides=(), comm=None) -> cfg   validated, every rank agrees
    run_fit(cfg, replicas=None, resume=False, quiet=False, comm=None) -> FitResult   (failure_policy)
    fit_outputs(cfg) -> [file]                   what it writes (checked by config.check_outputs first)
    FitResult                                    path, checkpoint, epochs, stats, learned, likelihood
                                                 (the last estimate), n_train, n_holdout, cramer_rao, plots
    HISTORY_GROUPS                               per-epoch /history, sparse /likelihood

Output file (docs/fitting.md): /history (one row per epoch: couplings statistics, gradient norms,
moment residuals, timings), /likelihood (rows at the estimated epochs: log-likelihood per site of
the training and held-out data with errors, F_S), /couplings/<family> (seeds `qftml sample`),
/checkpoints/epoch_<n>/<family>, /fisher (the Cramer-Rao errors of the learned couplings from the
model's Fisher blocks: tied families exactly, untied per site block), /data/mean_phi, /data/example
(row 0), /model/mean_phi and /model/samples (configurations of the learned model), attributes
(config, data sources, ranks).
The checkpoint "<path>.ckpt" is the trainer checkpoint of `learn` (qftml.io.checkpoints).
Everything about the input is checked before anything is written (exit 2, every rank agrees).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field as dc_field

import numpy as np

HISTORY_GROUPS = {"per_epoch": ("history",), "sparse": ("likelihood",)}


def fit_schema() -> dict:
    from qftml.config import LATTICE, OUTPUT, SAMPLER, Spec
    from qftml.learning.driver import model_schema, optimizer_schema

    sampler = {k: SAMPLER[k] for k in ("algorithm", "thermalize", "hits", "seed", "step", "start", "cluster",
                                        "cluster_every")}
    model = dict(model_schema())
    model["field"] = Spec("str", "real", choices=("real", "ising"), help="field type of the model (and the data)")
    data = {
        "files": Spec("list[str]", help="qftml ensembles (.h5: /configs), .npy arrays (n, *shape), images (.png/.jpg)"),
        "skip": Spec("int", 0, min=0, help="drop the first n configurations of every ensemble file"),
        "limit": Spec("int", 0, min=0, help="use at most this many configurations (0: all)"),
        "holdout": Spec("float", 0.2, min=0.0, max=0.9, help="fraction of the configurations (the last ones) held out"),
        "image_scale": Spec("float", 1.0, min=0.0, min_exclusive=True, help="phi = scale (2 v - 1), v grey in [0, 1]"),
        "image_resize": Spec("bool", False, help="resize images to the lattice (bilinear)"),
        "image_copies": Spec("int", 1, min=1, help="configurations per image (noisy copies)"),
        "image_noise": Spec("float", 0.0, min=0.0, help="standard deviation of the noise added to each copy"),
        "truth": Spec("str", "auto", help="couplings file of the true couplings for plots ('auto': the first "
                                          "ensemble's /couplings, '': none)"),
    }
    training = dict(optimizer_schema())
    training.update({
        "epochs": Spec("int", 100, min=1),
        "samples": Spec("int", 100, min=5, help="model configurations per epoch (per replica; the Gamma method "
                                               "needs >= 5)"),
        "sweeps_between": Spec("int", 2, min=1),
        "thermalize_after_update": Spec("int", 5, min=0),
        "replicas": Spec("int", 1, min=1, help="independent chains; they split the data configurations"),
        "method": Spec("str", "pcd", choices=("pcd", "cd"), help="persistent chains, or CD-k from data rows"),
        "cd_k": Spec("int", 1, min=1, help="sweeps per sample for method = 'cd'"),
        "batch": Spec("int", 0, min=0, help="expected training configurations per epoch (0: full batch)"),
        "l2": Spec("float", 0.0, min=0.0, help="L2 regularisation: adds l2 (theta - center) to the gradient"),
        "l2_center": Spec("str", "zero", choices=("zero", "mean"), help="center: 0 or the family's mean"),
        "ll_every": Spec("int", 0, min=0, help="log-likelihood every n epochs (0: first and last only)"),
        "ll_nodes": Spec("int", 8, min=2, help="thermodynamic-integration nodes for ln Z"),
        "ll_samples": Spec("int", 200, min=10),
        "ll_thermalize": Spec("int", 200, min=0),
        "checkpoint_every": Spec("int", 0, min=0, help="epochs between checkpoints (0: only at the end)"),
    })
    training["precondition"] = Spec("str", "none", choices=("none", "fisher"),
                                    help="'fisher': natural gradient with the model's Fisher blocks")
    output = dict(OUTPUT)
    output["plots"] = Spec("bool", True, help="write <stem>_couplings.png, _residuals.png, _recovery.png, _images.png")
    output["samples"] = Spec("int", 4, min=0, help="configurations of the learned model stored in /model/samples")
    return {"lattice": LATTICE, "sampler": sampler, "model": model, "data": data, "training": training,
            "output": output}


def load_fit_config(path, overrides=(), comm=None) -> dict:
    from qftml.config import ConfigError, load_config
    from qftml.learning.driver import model_errors

    cfg = load_config(path, fit_schema(), overrides, comm)
    m, t = cfg["model"], cfg["training"]
    errors = model_errors(m)
    if not cfg["output"]["path"]:
        errors.append("output.path is empty (give the HDF5 file to write)")
    if m["field"] == "ising" and set(m["learn"]) & {"a", "b"}:
        errors.append("model.field = 'ising': phi^2 = phi^4 = 1, so a and b cannot be learned (model.learn)")
    if t["optimizer"] == "momentum" and not t["momentum"] < 1:
        errors.append(f"training.momentum = {t['momentum']} must be < 1")
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    return cfg


@dataclass
class FitResult:
    path: str
    checkpoint: str
    epochs: int
    stats: dict
    learned: list = dc_field(default_factory=list)
    likelihood: dict | None = None       # the last estimate (Likelihood.row())
    first_likelihood: dict | None = None
    n_train: int = 0
    n_holdout: int = 0
    cramer_rao: dict = dc_field(default_factory=dict)   # tied family -> sigma
    plots: list = dc_field(default_factory=list)


# ----------------------------------------------------------------------------- set-up
def _load_data(cfg, lat, comms):
    """The sharded data {"train": (rows, block), "holdout": (rows, block)} and the DataIndex; every
    bad input becomes one ConfigError on every rank before anything is written."""
    from qftml.config import ConfigError
    from qftml.io.datasets import check_shards, inspect_data, load_shard, split_rows

    d, field = cfg["data"], cfg["model"]["field"]
    index = inspect_data(d, lat.shape, field, comms.world)
    train, hold = split_rows(index.n, d["holdout"])
    if len(train) < 2 * comms.replicas:
        raise ConfigError(f"data: {len(train)} training configurations (of {index.n}, data.holdout = {d['holdout']}) "
                          f"are too few for {comms.replicas} replicas (need at least 2 per replica)")
    r, R = comms.replica, comms.replicas
    data = {}
    for name, rows in (("train", train), ("holdout", hold)):
        mine = rows[r::R]
        data[name] = (mine, load_shard(index, mine, lat, d, seed=cfg["sampler"]["seed"]))
    check_shards(list(data.values()), index, field, comms)
    return data, index


def _truth_path(cfg, index):
    t = cfg["data"]["truth"]
    if t != "auto":
        return t
    src = index.sources[0]
    if src["kind"] != "ensemble":
        return ""
    import h5py

    with h5py.File(src["path"], "r") as f:
        return src["path"] if "couplings" in f else ""


def _epoch_values(rec, names) -> dict:
    out = {"epoch": rec.epoch, "lr": rec.lr, "acceptance": rec.acceptance, "projected": rec.projected,
           "clipped": rec.clipped, "n_data": rec.n_data}
    for k, v in rec.timings.items():
        out[f"time_{k}"] = v
    for fam, v in rec.grad_norms.items():
        out[f"grad_norm/{fam}"] = v
    for fam, st in rec.stats.items():
        for k, v in st.items():
            out[f"couplings/{fam}/{k}"] = v
    for i, n in enumerate(names):
        out[f"residual/{n}"] = rec.residual[i]
        out[f"residual_z/{n}"] = rec.residual_z[i]
        out[f"model/{n}"] = rec.model_moments[i]
    return out


def _ti_keys(cfg):
    t, s = cfg["training"], cfg["sampler"]
    return {"nodes": t["ll_nodes"], "samples": t["ll_samples"], "thermalize": t["ll_thermalize"],
            "sweeps_between": t["sweeps_between"], "algorithm": s["algorithm"], "hits": s["hits"],
            "cluster": s["cluster"], "cluster_every": s["cluster_every"]}


# ----------------------------------------------------------------------------- the run
def fit_outputs(cfg) -> list:
    """The files `qftml fit` writes: output.path, its checkpoint, the plots (output.plots)."""
    from qftml.io.checkpoints import checkpoint_path

    path = cfg["output"]["path"]
    plots = [f"{os.path.splitext(path)[0]}_{p}.png" for p in ("couplings", "residuals", "recovery", "images")]
    return [path, checkpoint_path(path)] + (plots if cfg["output"]["plots"] else [])


def run_fit(cfg, replicas=None, resume=False, quiet=False, comm=None) -> FitResult:
    """The whole `qftml fit` run (collective, under collective.failure_policy): every check (config,
    model, data, outputs) before anything is written."""
    from mpi4py import MPI

    from qftml.collective import failure_policy

    comm = MPI.COMM_WORLD if comm is None else comm
    with failure_policy(comm):
        return _run_fit(cfg, replicas, resume, quiet, comm)


def _run_fit(cfg, replicas, resume, quiet, comm) -> FitResult:
    import qftml
    from qftml.config import ConfigError, check_cluster, check_outputs
    from qftml.io.checkpoints import checkpoint_path
    from qftml.io.history import History
    from qftml.learning.driver import (build_model, build_optimizer, make_trainer_communicators, resume_trainer,
                                       save_trainer, trainer_physics, write_model_couplings)
    from qftml.learning.fit_trainer import FitTrainer
    from qftml.progress import Progress

    t, s, out = cfg["training"], cfg["sampler"], cfg["output"]
    comms = make_trainer_communicators(comm, t["replicas"] if replicas is None else replicas)
    lat = qftml.Lattice(cfg["lattice"]["shape"], comm=comms.domain, grid=cfg["lattice"]["grid"] or None)
    comms.connect(lat)
    check_cluster(s, comms.domain.size)
    model = build_model(cfg["model"], lat, cfg["model"]["field"])
    data, index = _load_data(cfg, lat, comms)
    optimizer = build_optimizer(t)
    trainer = FitTrainer(model, optimizer, comms, data, s, t["samples"], t["sweeps_between"],
                         t["thermalize_after_update"], t["method"], t["cd_k"], t["batch"], t["l2"], t["l2_center"],
                         t["precondition"], t["damping"], t["damping_mode"], t["max_step"])
    path, ckpt = out["path"], checkpoint_path(out["path"])
    physics = trainer_physics(cfg, ("lattice", "model", "sampler", "data"))
    physics["training"] = {k: v for k, v in t.items() if k not in ("epochs", "checkpoint_every", "ll_every")}
    history = History(path, comm, **HISTORY_GROUPS)
    n_hold = comm.allreduce(len(data["holdout"][0]) if lat.comm.rank == 0 else 0)
    result = FitResult(path=path, checkpoint=ckpt, epochs=0, stats={}, n_train=trainer.n_train, n_holdout=n_hold)
    # the one output rule, before anything is written; --resume continues (and replaces) its own files
    required = [(ckpt, "checkpoint"), (path, "output file")] if resume else ()
    check_outputs(fit_outputs(cfg), out["overwrite"] or resume, comm, require=required)
    if resume:
        resume_trainer(ckpt, trainer, comms, physics)
        if trainer.epoch >= t["epochs"]:
            raise ConfigError(f"--resume: the checkpoint is at epoch {trainer.epoch}, training.epochs = "
                              f"{t['epochs']}: nothing to do (raise training.epochs to continue)")
        history.truncate(trainer.epoch)
    else:
        history.create({"config": json.dumps(cfg), "version": qftml.__version__, "ranks": comm.size,
                        "replicas": comms.replicas, "grid": list(lat.grid), "shape": list(lat.shape),
                        "command": "fit", "data_sources": json.dumps(index.sources), "n_train": trainer.n_train,
                        "n_holdout": n_hold, "truth": _truth_path(cfg, index) if comm.rank == 0 else ""})
        write_model_couplings(path, model, comms, "checkpoints/epoch_0")
    comm.Barrier()
    ll_on = model.field == "real"
    epochs, ll_every, c_every = t["epochs"], t["ll_every"], t["checkpoint_every"]
    names = trainer.moment_names()
    rec = None
    with Progress(epochs, "fit", unit="epoch", comm=comm, quiet=quiet, initial=trainer.epoch) as progress:
        while trainer.epoch < epochs:
            e = trainer.epoch
            if ll_on and (e == 0 or (ll_every and e % ll_every == 0)):
                row = trainer.log_likelihood(e, _ti_keys(cfg)).row()
                history.append(row, "likelihood")
                progress.write(_format_ll(row))
            trainer.want_mean_phi = e == epochs - 1
            rec = trainer.run_epoch()
            history.append(_epoch_values(rec, names))
            if (c_every and trainer.epoch % c_every == 0) or trainer.epoch == epochs:
                write_model_couplings(path, model, comms, f"checkpoints/epoch_{trainer.epoch}")
                save_trainer(ckpt, trainer, comms, physics, cfg)
            st = rec.stats
            progress.update(trainer.epoch, **{f: f"{st[f]['mean']:.4f}" for f in model.learn if f in st},
                            z=f"{np.nanmax(np.abs(rec.residual_z)):.2f}")
    write_model_couplings(path, model, comms)
    if ll_on:
        row = trainer.log_likelihood(epochs, _ti_keys(cfg)).row()
        history.append(row, "likelihood")
        result.likelihood = row
        if not quiet:
            progress.write(_format_ll(row))
    result.cramer_rao = _write_extras(path, trainer, rec, comms, out["samples"])
    result.epochs, result.stats, result.learned = trainer.epoch, model.stats(), list(model.learn)
    if out["plots"] and comm.rank == 0:
        from qftml.plots.fit import plot_fit

        result.plots = plot_fit(path, os.path.splitext(path)[0])
    comm.Barrier()
    return result


def _format_ll(row) -> str:
    text = f"epoch {int(row['epoch'])}: log-likelihood per site train {row['train']:.5f} +- {row['train_err']:.5f}"
    if np.isfinite(row["holdout"]):
        text += f", held out {row['holdout']:.5f} +- {row['holdout_err']:.5f}"
    return text + f" (F_S = {row['f_s']:.3f} +- {row['f_s_err']:.3f})"


def _cramer_rao(trainer, rec):
    """Cramer-Rao errors sqrt(diag I^-1 / N): I = Cov_p(dS/dtheta) per configuration, N training rows.
    Tied families: the exact tied block; untied: each site's block (w[x, :], a[x], b[x], ...)."""
    res, n = rec.result, trainer.n_train
    tied, site = {}, {}
    if res.tied_families:
        inv = np.linalg.pinv(res.fisher_tied)
        tied = {f: float(np.sqrt(max(inv[i, i], 0.0) / n)) for i, f in enumerate(res.tied_families)}
    if res.site_families:
        inv = np.linalg.pinv(res.fisher_site)
        diag = np.sqrt(np.maximum(np.diagonal(inv, axis1=1, axis2=2), 0.0) / n)
        col = 0
        for fam, k in res.site_families:
            site[fam] = diag[:, col:col + k].reshape(trainer.model.shape(fam))
            col += k
    return tied, site


def _write_extras(path, trainer, rec, comms, n_samples):
    """/fisher (Cramer-Rao errors), /data/mean_phi, /model/mean_phi, /model/samples (replica 0 writes)."""
    from qftml.engine.sampler import Sampler
    from qftml.io.history import History
    from qftml.io.ensembles import BlockFile, choose_write_path

    lat = trainer.model.lattice
    tied, site = _cramer_rao(trainer, rec)
    mp = trainer.last_mean_phi
    if trainer.full is not None:
        data_mean = trainer.full.mean_phi
    else:   # mini-batches: one pass over every training row for the output
        from qftml.learning.data_statistics import data_moments

        data_mean = data_moments(trainer.model, trainer.data["train"][1], trainer.data["train"][0], comms).mean_phi
    blocks = {"model_mean_phi": mp["sum"] / max(mp["n"], 1), "data_mean_phi": data_mean}
    fields = []
    if n_samples:   # configurations of the learned model: its chain, continued on a copy
        from qftml.engine.lattice import Field

        f = Field(lat)
        f.local = trainer.chain.field.local
        sampler = Sampler(trainer.model.action(), seed=trainer.chain.seed, algorithm=trainer.chain.algorithm,
                          hits=trainer.chain.hits, step=trainer.chain.step, start="keep", field=f)
        sampler.sweep_index = trainer.chain.sweeps
        for _ in range(n_samples):
            sampler.sweep(max(10, trainer.sweeps_between))
            fields.append(f.local)
    arrays = {f"fisher/cramer_rao/{k}": (v, ()) for k, v in site.items()}
    arrays["data/mean_phi"] = (blocks["data_mean_phi"], ())
    arrays["data/example"] = (trainer.data["train"][1][0], ())   # global row 0 (replica 0's first)
    arrays["model/mean_phi"] = (blocks["model_mean_phi"], ())
    if fields:
        arrays["model/samples"] = (np.stack(fields), (slice(None),))
    if comms.replica == 0:
        bf = BlockFile(path, "a", lat, choose_write_path(lat.comm))
        try:
            for name, (local, lead) in arrays.items():
                if bf.owns_file and name in bf.file:
                    del bf.file[name]
                nlead = len(lead)
                bf.create(name, local.shape[:nlead] + tuple(lat.shape) + local.shape[nlead + lat.ndim:])
                bf.write_blocks(name, lead, local)
        finally:
            bf.close()
    comms.world.Barrier()
    History(path, comms.world).set_attrs("fisher", {"tied": json.dumps(tied), "n_train": trainer.n_train})
    comms.world.Barrier()
    return tied


__all__ = ["fit_schema", "load_fit_config", "run_fit", "fit_outputs", "FitResult", "HISTORY_GROUPS"]
