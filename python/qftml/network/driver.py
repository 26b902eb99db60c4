"""`qftml network`: train a phi^4 network or a greedy stack of them on data, evaluate by AIS.

Exports:
    network_schema() -> {section: {key: Spec}}       [data], [network], [training], [output]
    LAYER_KEYS                                       keys of one [[layers]] table
    load_network_config(path, overrides=(), comm=None) -> cfg   validated; cfg["layers"] is the list of
                                                     layers (the single [network] table if no [[layers]])
    prepare(cfg, comm) -> Prepared(train, test, kinds)   data loaded and checked against every layer
    run_network(cfg, resume=False, quiet=False, comm=None) -> NetworkResult
    network_outputs(cfg) -> [file]                   what it writes (checked by config.check_outputs first)
Layer k trains on layer k-1's hidden conditional means (propagate = "mean"), or on exact samples
of them ("sample"; "auto": samples when layer k has bernoulli visible units).

Output file ([output] path): /layers/<k>/w (N_v, N_h), /layers/<k>/visible/<lin|quad|quart>,
/layers/<k>/hidden/<...> (the couplings r, a, b and s, m, n of DESIGN 1.6), attributes kind/preset,
ln Z (AIS) with error and the check schedule's value, held-out and training log-likelihood per
sample; /history/<k>/{recon_error, pseudo_ll, seconds} per epoch; /ais/<k>/{epoch, log_z, log_z_err,
ll_train, ll_test} every ais_every epochs; root attributes config (JSON), n_ranks, version.
Checkpoint "<path>.ckpt" (io.checkpoints, kind "network") after every checkpoint_every epochs and at
the end of each layer; --resume continues bit for bit (same number of ranks).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qftml.network.model import PRESETS, make_network
from qftml.network.units import Layer

LAYER_KEYS = ("preset", "hidden", "visible", "epochs", "lr", "v_quad", "v_quart", "h_quad", "h_quart")


def network_schema() -> dict:
    from qftml.config import OUTPUT, Spec
    from qftml.learning.driver import optimizer_schema
    from qftml.network.data import SOURCES, TRANSFORMS

    data = {
        "source": Spec("str", "digits", choices=SOURCES),
        "path": Spec("str", "", help="file for source = 'ensemble' or 'npy'"),
        "transform": Spec("str", "none", choices=TRANSFORMS),
        "threshold": Spec("float", 0.5, help="binarize: x > threshold after scaling to [0, 1]"),
        "holdout": Spec("float", 0.2, min=0.0, max=0.9, help="held-out fraction (Philox split)"),
        "max_samples": Spec("int", 0, min=0, help="use the first n samples (0: all)"),
    }
    network = {
        "preset": Spec("str", "bernoulli-bernoulli", choices=tuple(PRESETS)),
        "hidden": Spec("int", 64, min=1, help="hidden units"),
        "visible": Spec("int", 0, min=0, help="visible units (0: the data's features); checked against the data"),
        "v_quad": Spec("float", 0.5, help="initial visible quadratic coupling a (gaussian, phi4)"),
        "v_quart": Spec("float", 0.05, help="initial visible quartic coupling b (phi4)"),
        "h_quad": Spec("float", 0.5, help="initial hidden quadratic coupling m (gaussian, phi4)"),
        "h_quart": Spec("float", 0.05, help="initial hidden quartic coupling n (phi4)"),
    }
    opt = {k: v for k, v in optimizer_schema().items() if k not in ("precondition", "damping", "damping_mode",
                                                                     "max_step")}
    opt["lr"] = Spec("float", 0.05, min=0.0, min_exclusive=True, help="learning rate")
    training = dict(opt)
    training.update({
        "epochs": Spec("int", 10, min=1),
        "batch_size": Spec("int", 10, min=1),
        "method": Spec("str", "pcd", choices=("pcd", "cd")),
        "k": Spec("int", 1, min=1, help="Gibbs sweeps per step"),
        "chains": Spec("int", 100, min=1, help="persistent chains (pcd)"),
        "seed": Spec("int", 0, min=0, max=2 ** 64 - 1),
        "init_scale": Spec("float", 0.01, min=0.0, help="initial w ~ init_scale N(0, 1)"),
        "l2": Spec("float", 0.0, min=0.0, help="weight decay on w"),
        "learn": Spec("list[str]", [], help="trained couplings (empty: all), e.g. ['w', 'v_lin', 'h_lin']"),
        "quad_floor": Spec("float", 1e-3, min=0.0),
        "quart_floor": Spec("float", 1e-3, min=0.0),
        "propagate": Spec("str", "auto", choices=("auto", "mean", "sample")),
        "ais_every": Spec("int", 0, min=0, help="AIS estimate every n epochs (0: only at the end)"),
        "ais_chains": Spec("int", 100, min=2),
        "ais_steps": Spec("int", 1000, min=4),
        "checkpoint_every": Spec("int", 1, min=0, help="epochs between checkpoints (0: end of layers only)"),
    })
    output = dict(OUTPUT)
    output["plots"] = Spec("bool", True, help="receptive fields, data vs samples, log-likelihood vs epoch")
    return {"data": data, "network": network, "training": training, "output": output}


def _layer_schema():
    from qftml.config import Spec

    s = network_schema()["network"]
    s["epochs"] = Spec("int", 0, min=0, help="epochs of this layer (0: training.epochs)")
    s["lr"] = Spec("float", 0.0, min=0.0, help="learning rate of this layer (0: training.lr)")
    return s


def _load(path, overrides):
    from qftml.config import ConfigError, read_raw_config, validate

    raw = read_raw_config(path, overrides)
    layers = raw.pop("layers", None)
    cfg = validate(raw, network_schema())
    if layers is None:
        cfg["layers"] = [dict(cfg["network"], epochs=0, lr=0.0)]
        return cfg
    if not isinstance(layers, list) or not layers or not all(isinstance(x, dict) for x in layers):
        raise ConfigError("invalid configuration:\n  [[layers]] must be a non-empty array of tables")
    out, errors = [], []
    for k, layer in enumerate(layers):
        try:
            out.append(validate({"layers": layer}, {"layers": _layer_schema()})["layers"])
        except ConfigError as e:
            errors += [line.strip().replace("layers.", f"layers[{k}].") for line in str(e).splitlines()[1:]]
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    cfg["layers"] = out
    return cfg


def load_network_config(path, overrides=(), comm=None) -> dict:
    from qftml.config import ConfigError
    from qftml.collective import on_root

    return on_root(comm, lambda: _load(path, overrides), ConfigError)


@dataclass
class Prepared:
    train: np.ndarray
    test: np.ndarray


def prepare(cfg, comm=None) -> Prepared:
    """Load the data and check it against layer 0 (ValueError on every rank: nothing written)."""
    from qftml.collective import on_root
    from qftml.network.data import holdout_split, load_data

    d = cfg["data"]

    def load():
        x = load_data(d["source"], d["path"], d["transform"], d["threshold"], d["max_samples"])
        first = cfg["layers"][0]
        kind = PRESETS[first["preset"]][0]
        why = Layer(kind, first["visible"] or x.shape[1]).check_data(
            x, f"data ({d['source']}) for layer 0 ({first['preset']})")
        if why:
            raise ValueError(why)
        for k, layer in enumerate(cfg["layers"]):
            net = _new_network(layer, x.shape[1] if k == 0 else cfg["layers"][k - 1]["hidden"], cfg, k)
            why = net.normalisable()
            if why:
                raise ValueError(f"layers[{k}] ({layer['preset']}): the initial network is not normalisable: {why}")
            if k > 0 and net.visible.kind == "bernoulli" and cfg["training"]["propagate"] == "mean":
                raise ValueError(f"layers[{k}] has bernoulli visible units: the hidden means of layer {k - 1} are "
                                 f"not binary; use training.propagate = 'sample' or 'auto'")
        return x

    x = on_root(comm, load, ValueError) if comm is not None else load()
    tr, te = holdout_split(len(x), d["holdout"], cfg["training"]["seed"])
    return Prepared(train=x[tr], test=x[te])


def _new_network(layer, n_visible, cfg, k, data=None):
    t = cfg["training"]
    net = make_network(layer["preset"], n_visible, layer["hidden"], seed=t["seed"], scale=t["init_scale"], layer=k)
    for lay, prefix in ((net.visible, "v_"), (net.hidden, "h_")):
        if lay.kind != "bernoulli":
            lay.quad[:] = layer[prefix + "quad"]
        if lay.kind == "phi4":
            lay.quart[:] = layer[prefix + "quart"]
    if data is not None:  # visible biases from the data (Hinton's guide): the independent units' means
        net.visible.center(data)
    return net


@dataclass
class LayerResult:
    net: object
    log_z: float
    log_z_err: float
    log_z_check: float
    log_z_check_err: float
    ll_train: float
    ll_test: float
    ll_test_err: float
    epochs: int


@dataclass
class NetworkResult:
    path: str
    layers: list = field(default_factory=list)
    stopped: str = ""
    plots: list = field(default_factory=list)
    checkpoint: str = ""


def network_outputs(cfg) -> list:
    """The files `qftml network` writes: output.path, its checkpoint, the plots (output.plots)."""
    from qftml.io.checkpoints import checkpoint_path
    from qftml.io.json_output import output_stem

    path = cfg["output"]["path"]
    stem = output_stem(path)
    plots = [f"{stem}_{p}.png" for p in ("receptive_fields", "samples", "likelihood")]
    return [path, checkpoint_path(path)] + (plots if cfg["output"]["plots"] else [])


def _physics(cfg):
    t = {k: v for k, v in cfg["training"].items() if k not in ("epochs", "checkpoint_every", "ais_every",
                                                                 "ais_chains", "ais_steps")}
    layers = [{k: v for k, v in layer.items() if k != "epochs"} for layer in cfg["layers"]]
    return {"data": cfg["data"], "layers": layers, "training": t}


def evaluate(net, train, test, t, comm, base_data, ids=(0, 0)) -> dict:
    """AIS ln Z (and its check schedule) and the mean log-likelihood per sample; the AIS streams of
    (layer, epoch) = ids are derive_seed(seed, ais, *ids)."""
    from qftml.engine import rng
    from qftml.network import ais

    base = ais.base_from_data(net.visible.kind, base_data)
    if net.visible.kind == "phi4":
        base = net.visible.copy()
    seed = rng.derive_seed(t["seed"], "ais", *ids)
    main, check = ais.ais_check(net, t["ais_chains"], t["ais_steps"], seed, comm, base)
    ll_tr = ais.log_likelihood(net, train, main.log_z)
    ll_te = ais.log_likelihood(net, test, main.log_z) if len(test) else np.array([np.nan])
    return {"log_z": main.log_z, "log_z_err": main.error, "log_z_check": check.log_z,
            "log_z_check_err": check.error, "ll_train": float(ll_tr.mean()), "ll_test": float(ll_te.mean()),
            "ll_test_err": float(np.hypot(main.error, ll_te.std(ddof=1) / np.sqrt(len(ll_te))))
            if len(ll_te) > 1 else float("nan")}


def pseudo_likelihood(net, v, seed, epoch):
    """sklearn's stochastic pseudo-likelihood (bernoulli visible units): N_v ln sigmoid(F(v~) - F(v)), one
    unit of each row flipped (Philox, network_sample)."""
    from qftml.engine import rng

    if net.visible.kind != "bernoulli":
        return float("nan")
    i = np.floor(rng.uniform(seed, "network_sample", np.arange(len(v)), c2=epoch) * v.shape[1]).astype(int)
    flipped = v.copy()
    flipped[np.arange(len(v)), i] = 1 - flipped[np.arange(len(v)), i]
    return float((v.shape[1] * -np.logaddexp(0, -(net.free_energy(flipped) - net.free_energy(v)))).mean())


def next_data(net, x, how, seed, k):
    from qftml.engine import rng

    if how == "sample":
        s = rng.derive_seed(seed, "network_sample", k)
        return net.hidden.sample(net.hidden_field(x), s, 0, 0, purpose="network_sample")
    return net.hidden_mean(x)


def run_network(cfg, resume=False, quiet=False, comm=None) -> NetworkResult:
    from qftml.network.stack import train_stack

    return train_stack(cfg, resume=resume, quiet=quiet, comm=comm)
