"""Greedy layer-wise training of a stack of phi^4 networks, with history, checkpoints and output.

Exports:
    train_stack(cfg, resume=False, quiet=False, comm=None) -> driver.NetworkResult   (the `network` run)
    write_layers(path, layers, comm)     /layers/<k>/... of every finished layer (rank 0)
    read_layers(path) -> [Network]       the networks of an output file (plain h5py)
    sample_stack(nets, n, seed, sweeps=200) -> visible samples: a Gibbs chain of the top network,
                                         then down through every lower layer's visible conditional mean
"""
from __future__ import annotations

import time

import numpy as np

from qftml.network import driver as D
from qftml.network.model import Network
from qftml.network.units import Layer


def _layer_arrays(net, prefix):
    out = {f"{prefix}w": net.w}
    for name, lay in (("visible", net.visible), ("hidden", net.hidden)):
        for p in ("lin", "quad", "quart"):
            out[f"{prefix}{name}/{p}"] = getattr(lay, p)
    return out


def _network_from(arrays, prefix, kinds):
    layers = []
    for name, kind in zip(("visible", "hidden"), kinds):
        lin, quad, quart = (np.asarray(arrays[f"{prefix}{name}/{p}"], dtype=float) for p in ("lin", "quad", "quart"))
        layers.append(Layer(kind, len(lin), lin, quad, quart))
    return Network(layers[0], layers[1], np.asarray(arrays[f"{prefix}w"], dtype=float))


def write_layers(path, layers, comm):
    if comm is not None and comm.rank != 0:
        return
    import h5py

    with h5py.File(path, "a") as f:
        for k, res in enumerate(layers):
            g = f"layers/{k}"
            if g in f:
                del f[g]
            for name, v in _layer_arrays(res.net, "").items():
                f.create_dataset(f"{g}/{name}", data=np.asarray(v))
            f[g].attrs.update({"visible_kind": res.net.visible.kind, "hidden_kind": res.net.hidden.kind,
                               "preset": res.net.preset, "epochs": res.epochs, "log_z": res.log_z,
                               "log_z_err": res.log_z_err, "log_z_check": res.log_z_check,
                               "log_z_check_err": res.log_z_check_err, "ll_train": res.ll_train,
                               "ll_test": res.ll_test, "ll_test_err": res.ll_test_err})


def read_layers(path):
    import h5py

    nets = []
    with h5py.File(path, "r") as f:
        for k in sorted(f["layers"], key=int):
            g = f[f"layers/{k}"]
            arrays = {}
            g.visititems(lambda n, o: arrays.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
            nets.append(_network_from(arrays, "", (g.attrs["visible_kind"], g.attrs["hidden_kind"])))
    return nets


def sample_stack(nets, n, seed, sweeps=200):
    from qftml.engine import rng

    top = nets[-1]
    s = rng.derive_seed(seed, "network_sample", len(nets))
    v = top.visible.sample(np.zeros((n, top.visible.n)), s, 0xFFFFFFF0, 0, purpose="network_sample")
    for t in range(sweeps):
        _, v = top.gibbs(v, s, t, 0, purpose="network_sample")
    for net in reversed(nets[:-1]):
        v = net.visible_mean(v)
    return nets[0].visible_mean(top.hidden_mean(v)) if len(nets) == 1 else v


def _checkpoint(path, comm, cfg, k, trainer, done):
    from qftml.io.checkpoints import write_network_checkpoint

    arrays = {"cur/" + name: v for name, v in trainer.state_dict().items()}
    for i, res in enumerate(done):
        arrays.update(_layer_arrays(res.net, f"done/{i}/"))
        arrays.update({f"done/{i}/{m}": getattr(res, m) for m in ("log_z", "log_z_err", "log_z_check",
                                                                   "log_z_check_err", "ll_train", "ll_test",
                                                                   "ll_test_err", "epochs")})
    write_network_checkpoint(path, comm, {"physics": D._physics(cfg), "layer": k}, arrays)


def _restore(path, comm, cfg):
    from qftml.io.checkpoints import CheckpointError, physics_differences, read_network_checkpoint

    state, arrays = read_network_checkpoint(path, comm)
    diff = physics_differences(state["physics"], D._physics(cfg))
    if diff:
        raise CheckpointError(f"{path}: the configuration differs from the checkpointed run:\n  " + "\n  ".join(diff))
    done = []
    for i in range(int(state["layer"])):
        layer = cfg["layers"][i]
        net = _network_from(arrays, f"done/{i}/", D.PRESETS[layer["preset"]])
        vals = {m: float(arrays[f"done/{i}/{m}"]) for m in ("log_z", "log_z_err", "log_z_check", "log_z_check_err",
                                                           "ll_train", "ll_test", "ll_test_err")}
        done.append(D.LayerResult(net=net, epochs=int(arrays[f"done/{i}/epochs"]), **vals))
    cur = {name[4:]: v for name, v in arrays.items() if name.startswith("cur/")}
    return int(state["layer"]), done, cur


def _trainer(cfg, k, net, train, comm):
    from qftml.learning.driver import build_optimizer
    from qftml.network.training import Trainer

    t = dict(cfg["training"])
    if cfg["layers"][k]["lr"]:
        t["lr"] = cfg["layers"][k]["lr"]
    return Trainer(net, train, batch_size=t["batch_size"], optimizer=build_optimizer(t), method=t["method"],
                   k=t["k"], chains=t["chains"], seed=t["seed"], layer=k, comm=comm, learn=t["learn"] or None,
                   l2=t["l2"], quad_floor=t["quad_floor"], quart_floor=t["quart_floor"])


def _train_layer(cfg, k, trainer, train, test, comm, hist, quiet, ckpt, done):
    from qftml.progress import Progress

    t = cfg["training"]
    epochs = cfg["layers"][k]["epochs"] or t["epochs"]
    with Progress(total=epochs, desc=f"layer {k}", comm=comm, quiet=quiet, initial=trainer.epochs_done) as bar:
        while trainer.epochs_done < epochs:
            t0 = time.process_time()
            rec = trainer.epoch()
            e = trainer.epochs_done
            row = {"recon_error": rec["recon_error"], "seconds": time.process_time() - t0,
                   "pseudo_ll": D.pseudo_likelihood(trainer.net, train, trainer.batch_seed, e)}
            hist.append(row, group=f"history/{k}")
            if t["ais_every"] and e % t["ais_every"] == 0 and e < epochs:
                ev = D.evaluate(trainer.net, train, test, t, comm, train, ids=(k, e))
                hist.append({"epoch": e, **{m: ev[m] for m in ("log_z", "log_z_err", "ll_train", "ll_test")}},
                            group=f"ais/{k}")
            if t["checkpoint_every"] and e % t["checkpoint_every"] == 0:
                _checkpoint(ckpt, comm, cfg, k, trainer, done)
            bar.update()
    return epochs


def train_stack(cfg, resume=False, quiet=False, comm=None) -> D.NetworkResult:
    import json

    import qftml
    from qftml.io.checkpoints import checkpoint_path
    from qftml.io.history import History
    from qftml.network.training import NetworkStop

    from qftml.config import check_outputs

    prep = D.prepare(cfg, comm)
    path = cfg["output"]["path"]
    ckpt = checkpoint_path(path)
    # the one output rule, before anything is written; --resume continues (and replaces) its own files
    required = [(ckpt, "checkpoint"), (path, "output file")] if resume else ()
    check_outputs(D.network_outputs(cfg), cfg["output"]["overwrite"] or resume, comm, require=required)
    start, done, cur = 0, [], None
    if resume:
        start, done, cur = _restore(ckpt, comm, cfg)
    hist = History(path, comm, per_epoch=tuple(f"history/{k}" for k in range(len(cfg["layers"]))),
                   sparse=tuple(f"ais/{k}" for k in range(len(cfg["layers"]))))
    if not resume:
        hist.create({"format": "qftml-network", "config": json.dumps(cfg, sort_keys=True),
                     "n_ranks": 1 if comm is None else comm.size, "package_version": qftml.__version__})
    result = D.NetworkResult(path=path, checkpoint=ckpt)
    train, test = prep.train, prep.test
    for res in done:  # the data of the first unfinished layer
        train, test = (D.next_data(res.net, x, _propagate(cfg, len(result.layers) + 1), cfg["training"]["seed"],
                                   len(result.layers)) for x in (train, test))
        result.layers.append(res)
    for k in range(start, len(cfg["layers"])):
        layer = cfg["layers"][k]
        net = D._new_network(layer, train.shape[1], cfg, k, data=train)
        why = net.visible.check_data(train, f"data of layers[{k}] ({layer['preset']})")
        if why:
            raise ValueError(why)
        trainer = _trainer(cfg, k, net, train, comm)
        if cur is not None and k == start:
            trainer.load_state_dict(cur)
            layer_hist = History(path, comm, per_epoch=(f"history/{k}",), sparse=(f"ais/{k}",))
            layer_hist.truncate(trainer.epochs_done)
        try:
            epochs = _train_layer(cfg, k, trainer, train, test, comm, hist, quiet, ckpt, result.layers)
        except NetworkStop as e:
            result.stopped = str(e)
            epochs = trainer.epochs_done
        ev = D.evaluate(trainer.net, train, test, cfg["training"], comm, train, ids=(k, 0xFFFFFFFF))
        result.layers.append(D.LayerResult(net=trainer.net, epochs=epochs, **ev))
        write_layers(path, result.layers, comm)
        if k + 1 < len(cfg["layers"]):
            train, test = (D.next_data(trainer.net, x, _propagate(cfg, k + 1), cfg["training"]["seed"], k)
                           for x in (train, test))
            _checkpoint(ckpt, comm, cfg, k + 1, _trainer(cfg, k + 1, D._new_network(
                cfg["layers"][k + 1], train.shape[1], cfg, k + 1, data=train), train, comm), result.layers)
        else:
            _checkpoint(ckpt, comm, cfg, k, trainer, result.layers[:-1])
        if result.stopped:
            break
    if cfg["output"]["plots"] and (comm is None or comm.rank == 0):
        from qftml.plots.network import plot_network

        result.plots = plot_network(path, [r.net for r in result.layers], prep.train, cfg["training"]["seed"])
    if comm is not None:
        comm.Barrier()
    return result


def _propagate(cfg, k):
    how = cfg["training"]["propagate"]
    if how == "auto":
        return "sample" if D.PRESETS[cfg["layers"][k]["preset"]][0] == "bernoulli" else "mean"
    return how


__all__ = ["train_stack", "write_layers", "read_layers", "sample_stack"]
