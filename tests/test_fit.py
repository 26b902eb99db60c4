"""`qftml fit`: maximum likelihood of data, KL(q||p) (DESIGN 1.5; qftml.learning.fit_trainer).

Oracles (Gaussian data and model, tied w and a on 8x8):
    <dS/da>_p = V G(0), <dS/dw>_p = -d V G(e_1) with G the exact propagator;
    the data term is recomputed with numpy on the same arrays; ln Z = exact.gaussian_log_z;
    the maximum-likelihood couplings by moment matching (exact.gaussian_ml_tied).
Errors: model moments by the Gamma method (their standardised residuals are what fit reports), the
Cramer-Rao error sqrt(diag I^-1 / N_eff) with I the exact Gaussian Fisher matrix.
"""
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml import exact
from qftml.collective import make_communicators
from qftml.learning.driver import build_optimizer, model_schema, optimizer_schema

SHAPE = (8, 8)
WD, AD = 0.3, 1.0          # the data's Gaussian


def _defaults(schema):
    return {k: v.default for k, v in schema.items()}


def _sampler(seed=3):
    return {"algorithm": "independence", "thermalize": 50, "hits": 1, "seed": seed, "step": 1.0, "start": "hot",
            "cluster": "none", "cluster_every": 1}


def _model(lat, w=0.1, a=1.5, tied=("w", "a")):
    from qftml.learning.driver import build_model

    m = _defaults(model_schema())
    m.update(learn=["w", "a"], tied=list(tied), w_range=[w, w], a_range=[a, a], b_range=[0.0, 0.0])
    return build_model(m, lat, "real")


def _trainer(comm, data, replicas=1, grid=None, tied=("w", "a"), samples=200, seed=3, **kw):
    from qftml.learning.fit_trainer import FitTrainer

    comms = make_communicators(comm, replicas)
    lat = qftml.Lattice(SHAPE, comm=comms.domain, grid=grid)
    comms.connect(lat)
    t = _defaults(optimizer_schema())
    t.update(kw.pop("training", {}))
    r, R = comms.replica, comms.replicas
    shards = {}
    for name, (rows, arr) in data.items():
        mine = rows[r::R]
        shards[name] = (mine, np.ascontiguousarray(arr[mine][(slice(None),) + lat.local_slices]))
    return FitTrainer(_model(lat, tied=tied), build_optimizer(t), comms, shards, _sampler(seed), samples, **kw)


def _gaussian_data(n=160, n_hold=40, seed=11):
    x = exact.gaussian_samples(SHAPE, WD, AD, n + n_hold, seed)
    return x, {"train": (np.arange(n), x), "holdout": (np.arange(n, n + n_hold), x)}


def test_mc_gradient_on_gaussian_data_equals_the_exact_gradient():
    x, data = _gaussian_data()
    tr = _trainer(MPI.COMM_SELF, data, samples=3000)
    ws, as_ = float(tr.model.params["w"]), float(tr.model.params["a"])
    rec = tr.run_epoch()
    V, d = x[0].size, len(SHAPE)
    train = x[:160]
    links = sum((train * np.roll(train, -1, axis=1 + mu)).sum(axis=(1, 2)) for mu in range(d))
    # data term: the engine's densities equal numpy on the same arrays
    assert float(tr.full.means["a"]) == pytest.approx((train ** 2).sum(axis=(1, 2)).mean(), rel=1e-12)
    assert float(tr.full.means["w"]) == pytest.approx(-links.mean(), rel=1e-12)
    # model term: <D>_p against the exact propagator, within 4 of its Gamma-method errors
    G = exact.gaussian_propagator(SHAPE, ws, as_)
    exact_model = {"a": V * G[0, 0], "w": -d * V * G[1, 0]}
    names = tr.moment_names()
    errs = {"a": V * rec.model_moments_err[names.index("phi2")],
            "w": V * np.hypot(*rec.model_moments_err[[names.index("link_0"), names.index("link_1")]])}
    for fam in ("w", "a"):
        mc = float(tr.full.means[fam] - rec.result.grads[fam])      # grads = data - model
        assert abs(mc - exact_model[fam]) < 4 * errs[fam], (fam, mc, exact_model[fam], errs[fam])
    # untied gradients of the same chain summed over sites and links are the tied gradient
    tu = _trainer(MPI.COMM_SELF, data, samples=3000, tied=())
    ru = tu.run_epoch()
    for fam in ("w", "a"):
        assert ru.result.grads[fam].sum() == pytest.approx(float(rec.result.grads[fam]), rel=1e-9)


def _fisher_gaussian(shape, w, a):
    """Exact Fisher matrix of (w, a) tied: Cov of (-sum links, sum phi^2) = (1/2) tr(K^-1 dK K^-1 dK)."""
    k = exact.momenta(shape)
    K = exact.gaussian_kernel(shape, w, a)
    dK = {"w": -2 * sum(np.cos(km) for km in k), "a": 2 * np.ones_like(K)}
    fams = ("w", "a")
    return np.array([[0.5 * np.sum(dK[i] * dK[j] / K ** 2) for j in fams] for i in fams])


def test_recovery_of_tied_couplings_within_four_cramer_rao_sigma_and_the_gaussian_likelihood():
    """Engine data (heatbath chain of the Gaussian (WD, AD)): the fit recovers the couplings within
    4 Cramer-Rao sigma (exact Fisher, N_eff = N / 2 tau_int of the data's sufficient statistics), lands
    on the exact maximum-likelihood couplings within its Monte Carlo error, its held-out log-likelihood
    equals the exact one within errors, and the log-likelihood increases during training."""
    from qftml.stats.errors import tau_int

    lat = qftml.Lattice(SHAPE, comm=MPI.COMM_SELF)
    sampler = qftml.Sampler(qftml.Action(lat, WD, AD, 0.0, 0.0), seed=5, algorithm="independence")
    sampler.thermalize(100)
    x = []
    for _ in range(400):
        sampler.sweep(3)
        x.append(sampler.field.local)
    x = np.array(x)
    n = 320
    data = {"train": (np.arange(n), x), "holdout": (np.arange(n, 400), x)}
    tr = _trainer(MPI.COMM_SELF, data, samples=1500, training={"lr": 0.7}, precondition="fisher", damping=0.0,
                  max_step=0.1, thermalize_after_update=5)
    ti = {"nodes": 8, "samples": 300, "thermalize": 100, "sweeps_between": 1, "algorithm": "independence", "hits": 1,
          "cluster": "none", "cluster_every": 1}
    first = tr.log_likelihood(0, ti)
    for _ in range(15):
        rec = tr.run_epoch()
    w, a = float(tr.model.params["w"]), float(tr.model.params["a"])
    train = x[:n]
    phi2 = (train ** 2).mean()
    link = np.mean([(train * np.roll(train, -1, axis=1 + mu)).mean() for mu in range(2)])
    w_ml, a_ml, _ = exact.gaussian_ml_tied(SHAPE, phi2, link)
    # Cramer-Rao around the truth
    stats = np.stack([(train ** 2).sum(axis=(1, 2)), sum((train * np.roll(train, -1, axis=1 + mu)).sum(axis=(1, 2))
                                                         for mu in range(2))], axis=1)
    tau = max(tau_int(stats[:, j])[0] for j in range(2))
    inv = np.linalg.inv(_fisher_gaussian(SHAPE, WD, AD))
    cr = np.sqrt(np.diag(inv) * 2 * tau / n)
    # Monte Carlo error of the fitted couplings: the model moments' errors through the inverse Fisher
    inv_ml = np.linalg.inv(_fisher_gaussian(SHAPE, w_ml, a_ml))
    names = tr.moment_names()
    V = lat.volume
    m_err = np.array([V * np.hypot(*rec.model_moments_err[[names.index("link_0"), names.index("link_1")]]),
                      V * rec.model_moments_err[names.index("phi2")]])
    mc = np.sqrt(np.diag(inv_ml @ np.diag(m_err ** 2) @ inv_ml))
    for val, ml, true, s_cr, s_mc in ((w, w_ml, WD, cr[0], mc[0]), (a, a_ml, AD, cr[1], mc[1])):
        assert abs(ml - true) < 4 * s_cr, (ml, true, s_cr)
        assert abs(val - ml) < 4 * s_mc, (val, ml, s_mc)
        assert abs(val - true) < 4 * np.hypot(s_cr, s_mc)
    assert np.ptp(tr.model.local_couplings()["w"]) == 0   # tied
    # held-out log-likelihood against the exact one (the same data: only ln Z is estimated)
    last = tr.log_likelihood(tr.epoch, ti)
    hold = x[n:]
    s_hold = a * (hold ** 2).sum(axis=(1, 2)).mean() - w * sum(
        (hold * np.roll(hold, -1, axis=1 + mu)).sum(axis=(1, 2)) for mu in range(2)).mean()
    exact_ll = (-s_hold - exact.gaussian_log_z(SHAPE, w, a)) / V
    assert last.s_holdout == pytest.approx(s_hold / V, rel=1e-12)
    assert abs(last.holdout - exact_ll) < 4 * last.f_s_err / V, (last.holdout, exact_ll, last.f_s_err / V)
    assert last.holdout_err >= last.f_s_err / V
    # the objective increased (same training rows: their <S> errors are common, use F's and the difference)
    gain = last.train - first.train
    assert gain > 4 * np.hypot(first.train_err, last.train_err), (first.train, last.train)


# ----------------------------------------------------------------------------- sharding over ranks
def _shared_dir(comm, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fit")) if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def _gather(tr, fam, value):
    """The global array on the domain's rank 0 (collective over the domain), or the tied scalar."""
    from qftml.learning.trainer import gather_global

    v = np.asarray(value)
    return float(v) if v.ndim == 0 else gather_global(tr.model.lattice, v)


@pytest.mark.mpi
@pytest.mark.parametrize("tied", [("w", "a"), ()])
def test_sharded_data_and_grids_give_the_single_rank_gradient(tied):
    """Data split over R replicas (configurations) and domains (lattice blocks, any grid): the data
    term equals the single-rank one to rounding; with one replica on any grid (the same chain) the
    whole gradient does."""
    world = MPI.COMM_WORLD
    x, data = _gaussian_data(n=24, n_hold=8)
    ref = _trainer(MPI.COMM_SELF, data, tied=tied, samples=40)
    ref_rec = ref.run_epoch()
    ref_data = {f: np.asarray(v) for f, v in ref.full.means.items()}
    ref_grad = {f: np.asarray(v) for f, v in ref_rec.result.grads.items()}
    grids = [None] + ([[world.size, 1], [1, world.size]] if world.size > 1 else [])
    if world.size == 4:
        grids.append([2, 2])
    for replicas in sorted({1, world.size} | ({2} if world.size % 2 == 0 else set())):
        for grid in (grids if replicas == 1 else [None]):
            tr = _trainer(world, data, replicas=replicas, grid=grid, tied=tied, samples=40)
            rec = tr.run_epoch()
            for fam in ("w", "a"):
                got = _gather(tr, fam, tr.full.means[fam])
                if tr.model.lattice.comm.rank == 0:
                    np.testing.assert_allclose(got, ref_data[fam], rtol=1e-12, err_msg=f"data {fam} R={replicas}")
                if replicas == 1:
                    g = _gather(tr, fam, rec.result.grads[fam])
                    if tr.model.lattice.comm.rank == 0:
                        np.testing.assert_allclose(g, ref_grad[fam], rtol=1e-9, atol=1e-10,
                                                   err_msg=f"gradient {fam} grid={grid}")
            assert tr.n_train == 24
    world.Barrier()


# ----------------------------------------------------------------------------- the command
CONFIG = """
[lattice]
shape = [8, 8]
[sampler]
algorithm = "independence"
thermalize = 30
seed = 3
[model]
learn = ["w", "a"]
tied = ["w"]
b_range = [0.0, 0.0]
w_range = [0.1, 0.1]
a_range = [1.4, 1.6]
[data]
files = ["{data}"]
holdout = 0.25
[training]
epochs = 4
samples = 30
lr = 0.02
optimizer = "adam"
max_step = 0.05
ll_every = 2
ll_nodes = 4
ll_samples = 20
ll_thermalize = 10
checkpoint_every = 1
[output]
path = "{path}"
plots = false
samples = 2
"""


def _write_inputs(comm, d, n=40):
    if comm.rank == 0:
        np.save(f"{d}/data.npy", exact.gaussian_samples(SHAPE, WD, AD, n, 7))
        with open(f"{d}/fit.toml", "w") as f:
            f.write(CONFIG.format(data=f"{d}/data.npy", path=f"{d}/unused.h5"))
    comm.Barrier()


def _cli(*argv):
    from qftml.cli import main
    return main(["fit", *argv])


def _read(path):
    import h5py

    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.mark.mpi
def test_fit_command_resumes_bit_identically_and_seeds_sample(tmp_path_factory):
    import shutil

    world = MPI.COMM_WORLD
    d = _shared_dir(world, tmp_path_factory)
    _write_inputs(world, d)
    cfg = f"{d}/fit.toml"
    assert _cli(cfg, "--quiet", "--set", f"output.path='{d}/full.h5'") == 0
    assert _cli(cfg, "--quiet", "--set", f"output.path='{d}/part.h5'", "--set", "training.epochs=2") == 0
    assert _cli(cfg, "--quiet", "--set", f"output.path='{d}/part.h5'", "--resume") == 0
    if world.rank == 0:
        full, part = _read(f"{d}/full.h5"), _read(f"{d}/part.h5")
        assert full["history/epoch"].shape == (4,)
        assert list(full["likelihood/epoch"]) == [0, 2, 4]
        # (the interrupted run's estimate at its end, epoch 2, has epoch >= 2: dropped on resume)
        assert sorted(full) == sorted(part)
        for k, v in full.items():
            if not k.startswith("history/time_"):
                np.testing.assert_array_equal(part[k], v, err_msg=k)
        assert full["couplings/w"].shape == (8, 8, 2) and np.ptp(full["couplings/w"]) == 0
        assert full["couplings/a"].shape == (8, 8) and np.ptp(full["couplings/a"]) > 0
        assert full["model/samples"].shape == (2, 8, 8)
        assert np.all(full["likelihood/train_err"] > 0) and np.all(np.isfinite(full["likelihood/holdout"]))
        shutil.copy(f"{d}/full.h5", f"{d}/seed.h5")
        with open(f"{d}/sample.toml", "w") as f:
            f.write(f'[lattice]\nshape = [8, 8]\n[action]\ncouplings = "{d}/seed.h5"\n[sampler]\n'
                    f'algorithm = "independence"\nsweeps = 20\nthermalize = 10\n[output]\npath = "{d}/sampled.h5"\n')
    world.Barrier()
    # the output seeds `qftml sample` directly
    from qftml.cli import main
    assert main(["sample", f"{d}/sample.toml", "--quiet"]) == 0
    if world.rank == 0:
        sampled = _read(f"{d}/sampled.h5")
        np.testing.assert_array_equal(sampled["couplings/a"], _read(f"{d}/full.h5")["couplings/a"])
        assert sampled["configs"].shape == (20, 8, 8)
    world.Barrier()


def _bad_inputs(d):
    """{case: (files, overrides, message)}; rank 0 writes the files."""
    ising = np.where(exact.gaussian_samples(SHAPE, WD, AD, 10, 3) > 0, 1.0, -1.0)
    nan = exact.gaussian_samples(SHAPE, WD, AD, 10, 3)
    nan[6, 3, 5] = np.nan
    arrays = {"shape.npy": np.zeros((10, 8, 6)), "nan.npy": nan, "empty.npy": np.zeros((0, 8, 8)),
              "ising.npy": ising, "real.npy": nan[:5], "few.npy": nan[:1]}
    if MPI.COMM_WORLD.rank == 0:
        for name, arr in arrays.items():
            np.save(f"{d}/{name}", arr)
        with open(f"{d}/garbage.npy", "w") as f:
            f.write("not an array")
        with open(f"{d}/garbage.png", "wb") as f:
            f.write(b"\x89PNG not really")
    return {
        "shape": (["shape.npy"], [], "do not match lattice.shape"),
        "nan": (["nan.npy"], [], "configuration 6 contains NaN"),
        "empty": (["empty.npy"], [], "no configurations"),
        "unreadable": (["garbage.npy"], [], "not a readable .npy"),
        "unreadable_image": (["garbage.png"], [], "not a readable image"),
        "missing": (["nothere.h5"], [], "no such file"),
        "ising_data_real_model": (["ising.npy"], [], "ising data"),
        "real_data_ising_model": (["real.npy"], ["model.field='ising'", "model.learn=['w']", "model.tied=['w']"],
                                  "not all +-1"),
        "too_few": (["few.npy"], ["data.holdout=0.0"], "too few"),
        "unknown_type": (["data.txt"], [], "unknown file type"),
        "ising_a": (["ising.npy"], ["model.field='ising'"], "a and b cannot be learned"),
    }


@pytest.mark.mpi
def test_every_bad_input_exits_2_on_every_rank_and_writes_nothing(tmp_path_factory, capsys):
    import os

    world = MPI.COMM_WORLD
    d = _shared_dir(world, tmp_path_factory)
    cases = _bad_inputs(d)
    _write_inputs(world, d)
    if world.rank == 0:
        open(f"{d}/data.txt", "w").close()
    world.Barrier()
    for case, (files, overrides, message) in cases.items():
        out = f"{d}/{case}.h5"
        files = "[" + ", ".join(f"'{d}/{f}'" for f in files) + "]"
        sets = ["--set", f"output.path='{out}'", "--set", f"data.files={files}"]
        for o in overrides:
            sets += ["--set", o]
        code = _cli(f"{d}/fit.toml", "--quiet", *sets)
        assert world.allgather(code) == [2] * world.size, case
        err = capsys.readouterr().err
        if world.rank == 0:
            assert message in err, (case, err)
        world.Barrier()
        assert not os.path.exists(out) and not os.path.exists(out + ".ckpt"), case


def test_images_are_read_with_the_stated_scaling_and_noisy_copies_do_not_depend_on_the_grid(tmp_path):
    from PIL import Image

    from qftml.io.datasets import DataIndex, image_to_field, load_shard

    grey = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    Image.fromarray(grey, mode="L").save(tmp_path / "img.png")
    Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB").save(tmp_path / "img.jpg", quality=100)
    phi = image_to_field(tmp_path / "img.png", (8, 8), scale=2.0)
    np.testing.assert_array_equal(phi, 2.0 * (2 * grey.astype(float) / 255.0 - 1))   # black -2, white +2
    assert np.max(np.abs(image_to_field(tmp_path / "img.jpg", (8, 8)) - phi / 2)) < 0.05   # lossy JPEG
    assert image_to_field(tmp_path / "img.png", (16, 16), resize=True).shape == (16, 16)
    cfg = {"image_scale": 1.0, "image_resize": False, "image_noise": 0.5}
    index = DataIndex(shape=(8, 8), sources=[{"path": str(tmp_path / "img.png"), "kind": "image", "rows": 3,
                                              "start": 0, "field": "real"}], n=3)
    whole = load_shard(index, [0, 1, 2], qftml.Lattice((8, 8), comm=MPI.COMM_SELF), cfg, seed=4)
    assert abs(np.std(whole - phi / 2) - 0.5) < 0.1 and np.ptp(whole[0] - whole[1]) > 0
    from qftml.engine import rng
    from qftml.learning.model import global_site_index
    lat = qftml.Lattice((8, 8), comm=MPI.COMM_SELF)
    np.testing.assert_array_equal(whole[2], phi / 2 + 0.5 * rng.normal(4, "fit_noise", global_site_index(lat), 2))


@pytest.mark.mpi
def test_image_copies_and_ensemble_rows_are_the_same_blocks_on_every_grid(tmp_path_factory):
    from PIL import Image

    from qftml.io.datasets import inspect_data, load_shard
    from qftml.learning.trainer import gather_global

    world = MPI.COMM_WORLD
    d = _shared_dir(world, tmp_path_factory)
    if world.rank == 0:
        Image.fromarray((np.arange(64, dtype=np.uint8).reshape(8, 8) * 4), mode="L").save(f"{d}/img.png")
        np.save(f"{d}/x.npy", exact.gaussian_samples(SHAPE, WD, AD, 5, 1))
    world.Barrier()
    cfg = {"files": [f"{d}/x.npy", f"{d}/img.png"], "skip": 0, "limit": 0, "image_scale": 1.0,
           "image_resize": False, "image_copies": 3, "image_noise": 0.3}
    index = inspect_data(cfg, SHAPE, "real", world)
    assert index.n == 8
    rows = [1, 4, 5, 7]
    ref = load_shard(index, rows, qftml.Lattice(SHAPE, comm=MPI.COMM_SELF), cfg, seed=2)
    for grid in [None] + ([[1, world.size]] if world.size > 1 else []):
        lat = qftml.Lattice(SHAPE, comm=world, grid=grid)
        block = load_shard(index, rows, lat, cfg, seed=2)
        for j in range(len(rows)):
            got = gather_global(lat, block[j])
            if world.rank == 0:
                np.testing.assert_array_equal(got, ref[j])
    world.Barrier()


def test_mini_batches_and_contrastive_divergence():
    x, data = _gaussian_data(n=64, n_hold=8)
    tr = _trainer(MPI.COMM_SELF, data, samples=20, batch=16)
    d0, d1 = tr.data_term(0), tr.data_term(1)
    from qftml.engine import rng
    for e, d in ((0, d0), (1, d1)):
        sel = rng.uniform(3, "fit_batch", np.arange(64, dtype=np.uint64), e, 0) < 16 / 64
        assert d.n == sel.sum() > 0
        assert float(d.means["a"]) == pytest.approx((x[:64][sel] ** 2).sum(axis=(1, 2)).mean(), rel=1e-12)
    assert d0.n != d1.n or float(d0.means["a"]) != float(d1.means["a"])
    cd = _trainer(MPI.COMM_SELF, data, samples=10, method="cd", cd_k=2, training={"lr": 1e-3})
    rec = cd.run_epoch()
    assert cd.chain.next_row == 10 and cd.chain.sweeps == 20 and np.isfinite(rec.residual).all()
    cd.run_epoch()
    assert cd.chain.next_row == 20
