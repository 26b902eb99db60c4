"""Learning an action by minimising F = <A - S>_p + F_S (qftml.learning.gradient), DESIGN 1.3.

Oracles: for Gaussian S and A (kernels K_S, K_A on the momentum grid)
    F(theta) = (1/2) sum_k [K_A/K_S - 1 + ln K_S] - (V/2) ln 2 pi
    dF/dc    = (1/2) sum_k (dK_S/dc) (K_S - K_A) / K_S^2
with dK/da = 2 and dK/dw = -2 sum_mu cos k_mu for tied couplings; F_A = -ln Z_A exactly.
"""
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml import exact
from qftml.learning import free_energy as FE
from qftml import learning as L
from qftml.collective import make_communicators
from qftml.learning import optimizers as O
from qftml.stats import errors
from configs import learn_config

SHAPE = (8, 8)
WS, AS = 0.4, 1.2      # model S (Gaussian)
WA, AA = 0.5, 1.25     # target A (Gaussian)


def exact_gradient(shape, ws, as_, wa, aa):
    k = exact.momenta(shape)
    ks, ka = exact.gaussian_kernel(shape, ws, as_), exact.gaussian_kernel(shape, wa, aa)
    fac = 0.5 * (ks - ka) / ks ** 2
    return {"a": float(np.sum(2 * fac)), "w": float(np.sum(-2 * sum(np.cos(km) for km in k) * fac))}


def exact_bound(shape, ws, as_, wa, aa):
    ks, ka = exact.gaussian_kernel(shape, ws, as_), exact.gaussian_kernel(shape, wa, aa)
    return 0.5 * float(np.sum(ka / ks - 1)) - exact.gaussian_log_z(shape, ws, as_)


def _obs_cov(d, x, name):
    import pyerrors as pe
    cov = pe.Obs([d * x], [name]) - pe.Obs([d], [name]) * pe.Obs([x], [name])
    cov.gamma_method()
    return cov


def test_mc_gradient_matches_exact_gaussian_gradient():
    lat = qftml.Lattice(SHAPE, comm=MPI.COMM_SELF)
    comms = make_communicators(MPI.COMM_SELF, 1)
    couplings = {"w": WS, "a": AS, "b": 0.0, "r": 0.0}
    tied = L.Model(lat, couplings, learn=("w", "a"), tied=("w", "a"))
    untied = L.Model(lat, couplings, learn=("w", "a"))
    target = qftml.Action(lat, WA, AA, 0.0, 0.0)
    est_t = L.GradientEstimator(tied, target, comms, fisher=True)
    est_u = L.GradientEstimator(untied, target, comms, batch_bytes=64 * 8 * 3 * 17)  # several batches
    act = tied.action()
    sampler = qftml.Sampler(act, seed=3, algorithm="independence")
    sampler.thermalize(100)
    est_t.begin(act, shift=12.0)
    est_u.begin(untied.action())
    stats = []
    for _ in range(4000):
        sampler.sweep(1)
        est_t.add(sampler.field)
        est_u.add(sampler.field)
        m = qftml.measure(sampler.field, act)
        stats.append((-m["sum_links_nn"], m["sum_phi2"]))
    res_t, res_u = est_t.finish(), est_u.finish()
    stats = np.array(stats)
    ex = exact_gradient(SHAPE, WS, AS, WA, AA)
    d = res_t.series
    for j, fam in enumerate(("w", "a")):
        cov = _obs_cov(d, stats[:, j], f"grad_{fam}")
        # the estimator computes the same covariance as the independent pyerrors expression
        assert float(res_t.grads[fam]) == pytest.approx(cov.value, rel=1e-8, abs=1e-9)
        assert abs(cov.value - ex[fam]) < 4 * cov.dvalue, (fam, cov.value, cov.dvalue, ex[fam])
        # untied gradients summed over sites/links are the tied gradient (linearity)
        assert res_u.grads[fam].sum() == pytest.approx(float(res_t.grads[fam]), rel=1e-9)
    # Fisher block of the tied families = covariance of their sufficient statistics
    np.testing.assert_allclose(res_t.fisher_tied, np.cov(stats.T, bias=True), rtol=1e-8)


def test_bound_estimate_matches_exact_and_lies_above_f_a():
    lat = qftml.Lattice(SHAPE, comm=MPI.COMM_SELF)
    comms = make_communicators(MPI.COMM_SELF, 1)
    ws, as_ = 0.2, 1.5   # farther from the target: KL(p||q) = 2.47 exactly
    model = L.Model(lat, {"w": ws, "a": as_, "b": 0.0, "r": 0.0}, learn=("w", "a"), tied=("w", "a"))
    target = qftml.Action(lat, WA, AA, 0.0, 0.0)
    est = L.GradientEstimator(model, target, comms)
    act = model.action()
    sampler = qftml.Sampler(act, seed=8, algorithm="independence")
    sampler.thermalize(50)
    est.begin(act)
    for _ in range(2000):
        sampler.sweep(1)
        est.add(sampler.field)
    res = est.finish()
    a_minus_s, a_minus_s_err = errors.mean_error(-res.series, "A_minus_S")
    f_s = FE.free_energy_ti(lat, model.local_couplings(), nodes=6, samples=400, thermalize=50,
                            algorithm="independence", seed=4)
    f, df = FE.variational_bound(a_minus_s, a_minus_s_err, f_s)
    f_exact = exact_bound(SHAPE, ws, as_, WA, AA)
    f_a = -exact.gaussian_log_z(SHAPE, WA, AA)
    assert f_exact > f_a + 2.0            # KL(p||q) = F - F_A is clearly positive here
    assert abs(f - f_exact) < 4 * df, (f, df, f_exact)
    assert f - f_a > 4 * df               # the Monte Carlo bound is above F_A, significantly


def test_learning_a_gaussian_target_from_random_inhomogeneous_couplings():
    # The gradient noise is proportional to the distance from the target (S - A -> const), so SGD
    # converges to it exactly; 300 epochs shrink the initial spread (~0.1) by > 100 (measured: 1e-4).
    lat = qftml.Lattice(SHAPE, comm=MPI.COMM_SELF)
    comms = make_communicators(MPI.COMM_SELF, 1)
    wa, aa = 0.4, 1.3
    start = L.random_couplings(lat, 5, {"w": (0.3, 0.7), "a": (1.6, 2.0), "b": 0.0, "r": 0.0})
    model = L.Model(lat, start, learn=("w", "a"))
    assert np.ptp(model.params["w"]) > 0.3
    target = qftml.Action(lat, wa, aa, 0.0, 0.0)
    trainer = L.Trainer(model, target, O.SGD(0.2), comms, seed=1, samples=100, thermalize=50,
                        thermalize_after_update=5, algorithm="independence")
    first = trainer.run_epoch()
    for _ in range(299):
        last = trainer.run_epoch()
    assert np.max(np.abs(model.params["w"] - wa)) < 0.01
    assert np.max(np.abs(model.params["a"] - aa)) < 0.01
    assert abs(last.a_minus_s) < 0.02 * abs(first.a_minus_s)


def test_natural_gradient_solves_the_site_blocks():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 3, 3))
    fisher = m @ m.transpose(0, 2, 1) + np.eye(3)
    g = {"w": rng.normal(size=(5, 2)), "a": rng.normal(size=5)}
    res = L.GradientResult(grads=g, mean_s_minus_a=0.0, var_s_minus_a=0.0, n=1, series=np.zeros(1),
                           fisher_site=fisher, fisher_tied=np.zeros((0, 0)), site_families=[("w", 2), ("a", 1)])
    flat = np.concatenate([g["w"], g["a"][:, None]], axis=1)
    for mode, damp in (("mean", lambda f: np.trace(f) / 3 * np.eye(3)), ("diagonal", lambda f: np.diag(np.diag(f)))):
        nat = res.natural_grads(damping=0.0, mode=mode)
        back = np.einsum("vij,vj->vi", fisher, np.concatenate([nat["w"], nat["a"][:, None]], axis=1))
        np.testing.assert_allclose(back, flat, rtol=1e-10)
        nat = res.natural_grads(damping=0.5, mode=mode)
        damped = np.array([f + 0.5 * damp(f) for f in fisher])
        back = np.einsum("vij,vj->vi", damped, np.concatenate([nat["w"], nat["a"][:, None]], axis=1))
        np.testing.assert_allclose(back, flat, rtol=1e-10)


def test_non_normalisable_update_gives_a_clear_error():
    lat = qftml.Lattice((4, 4), comm=MPI.COMM_SELF)
    comms = make_communicators(MPI.COMM_SELF, 1)
    model = L.Model(lat, {"w": 0.4, "a": 1.0, "b": 0.0, "r": 0.0}, learn=("w", "a"))
    target = qftml.Action(lat, 0.4, 1.0, 0.0, 0.0)
    model.params["a"][0, 0] = 0.1   # as if a huge step had been taken
    trainer = L.Trainer(model, target, O.SGD(0.1), comms, seed=0, samples=4)
    with pytest.raises(ValueError, match="normalisable region.*training.lr"):
        trainer.run_epoch()


def test_b_floor_projection_keeps_the_model_normalisable():
    lat = qftml.Lattice((4, 4), comm=MPI.COMM_SELF)
    model = L.Model(lat, {"w": 1.0, "a": 1.5, "b": 0.2, "r": 0.0}, b_floor=0.01)
    model.params["b"][:2, 0] = -0.3
    assert model.project() == 2
    assert model.params["b"].min() == 0.01
    model.action()  # normalisable again


def test_bad_replica_count_and_model_families():
    with pytest.raises(ValueError, match="divide"):
        make_communicators(MPI.COMM_SELF, 3)
    lat = qftml.Lattice((4, 4), comm=MPI.COMM_SELF)
    with pytest.raises(ValueError, match="absent"):
        L.Model(lat, {"a": 1.0, "b": 0.1}, learn=("g",))
    with pytest.raises(ValueError, match="not learned"):
        L.Model(lat, {"a": 1.0, "b": 0.1}, learn=("a",), tied=("b",))


# ------------------------------------------------------------------------------ MPI
def _train(comms, grid, epochs=3, precondition="fisher", tied=()):
    lat = qftml.Lattice((8, 8), comm=comms.domain, grid=grid)
    start = L.random_couplings(lat, 9, {"w": (0.8, 1.2), "a": (1.3, 1.8), "b": (0.15, 0.25), "r": 0.0})
    model = L.Model(lat, start, learn=("w", "a", "b"), tied=tied)
    target = qftml.Action.homogeneous(lat, extra="nnn", g=0.3)
    trainer = L.Trainer(model, target, O.make_optimizer("adam", 0.01), comms, seed=4, samples=20,
                        thermalize=20, thermalize_after_update=2, precondition=precondition)
    recs = [trainer.run_epoch() for _ in range(epochs)]
    out = {k: L.gather_global(lat, v) for k, v in model.local_couplings().items()}
    return out, recs


@pytest.mark.mpi
@pytest.mark.parametrize("tied", [(), ("b",)])
def test_result_does_not_depend_on_the_process_grid_inside_a_replica(tied):
    world = MPI.COMM_WORLD
    if world.size == 1:
        pytest.skip("needs at least 2 ranks to compare process grids")
    replicas = 2 if world.size >= 4 else 1
    comms = make_communicators(world, replicas)
    n = comms.domain.size
    results = [_train(comms, grid, tied=tied) for grid in ([n, 1], [1, n])]
    if comms.domain.rank == 0:
        for fam in results[0][0]:
            np.testing.assert_allclose(results[0][0][fam], results[1][0][fam], rtol=1e-9, atol=1e-12)
    for r0, r1 in zip(results[0][1], results[1][1]):
        assert r0.a_minus_s == pytest.approx(r1.a_minus_s, rel=1e-9, abs=1e-9)


@pytest.mark.mpi
def test_replica_accumulation_equals_single_rank_gradient_on_the_same_samples():
    world = MPI.COMM_WORLD
    comms = make_communicators(world, world.size if world.size <= 2 else 2)
    lat = qftml.Lattice((8, 8), comm=comms.domain)
    start = L.random_couplings(lat, 9, {"w": (0.8, 1.2), "a": (1.3, 1.8), "b": (0.15, 0.25), "r": 0.0})
    model = L.Model(lat, start, learn=("w", "a", "b"), tied=("w",))
    target = qftml.Action.homogeneous(lat)
    trainer = L.Trainer(model, target, O.SGD(0.01), comms, seed=4, samples=2, thermalize=10)
    comms.connect(lat)
    est = L.GradientEstimator(model, target, comms, fisher=True)
    act = model.action()
    sampler = qftml.Sampler(act, seed=trainer.seed, start="hot")
    sampler.thermalize(10)
    est.begin(act, shift=3.0)
    configs = []
    for _ in range(12):
        sampler.sweep(2)
        est.add(sampler.field)
        configs.append(sampler.field.gather(0))
    pooled = est.finish()
    # every replica's configurations, on one rank
    mine = configs if comms.domain.rank == 0 else None
    every = [c for part in world.allgather(mine) if part is not None for c in part]
    assert len(every) == 12 * comms.replicas
    full = {k: L.gather_global(lat, v) for k, v in model.local_couplings().items()}
    full = comms.domain.bcast(full, root=0)
    solo_lat = qftml.Lattice((8, 8), comm=MPI.COMM_SELF)
    solo_model = L.Model(solo_lat, full, learn=("w", "a", "b"), tied=("w",))
    solo_target = qftml.Action.homogeneous(solo_lat)
    solo = L.GradientEstimator(solo_model, solo_target, make_communicators(MPI.COMM_SELF, 1), fisher=True)
    solo.begin(solo_model.action())
    field = qftml.Field(solo_lat)
    for c in every:
        field.local = c
        field.exchange_halos()
        solo.add(field)
    single = solo.finish()
    assert single.n == pooled.n
    assert pooled.mean_s_minus_a == pytest.approx(single.mean_s_minus_a, rel=1e-10)
    for fam in ("w", "a", "b"):
        mine_global = pooled.grads[fam] if fam == "w" else L.gather_global(lat, pooled.grads[fam])
        if comms.domain.rank == 0:
            np.testing.assert_allclose(mine_global, single.grads[fam], rtol=1e-8, atol=1e-10)
    k = pooled.fisher_site.shape[-1]
    site = L.gather_global(lat, pooled.fisher_site.reshape(lat.local_shape + (k, k)))
    if comms.domain.rank == 0:
        np.testing.assert_allclose(site, single.fisher_site.reshape((8, 8, k, k)), rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------ the command
CONFIG = learn_config(dict(lr=0.05, epochs=6, samples=50, f_every=3, f_nodes=3, f_samples=30, f_thermalize=10,
                           checkpoint_every=3), "{path}")


def _run_cli(argv):
    from qftml.cli import main
    return main(["learn", *argv])


def test_learn_command_writes_history_couplings_and_resumes_exactly(tmp_path):
    import h5py

    cfg = tmp_path / "learn.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "full.h5"))
    assert _run_cli([str(cfg), "--quiet"]) == 0
    part = str(tmp_path / "part.h5")
    assert _run_cli([str(cfg), "--quiet", "--set", f"output.path='{part}'", "--set", "training.epochs=3"]) == 0
    assert _run_cli([str(cfg), "--quiet", "--set", f"output.path='{part}'", "--resume"]) == 0
    with h5py.File(tmp_path / "full.h5") as full, h5py.File(part) as resumed:
        assert full["history/epoch"].shape == (6,)
        assert full["couplings/w"].shape == (8, 8, 2) and full["couplings/a"].shape == (8, 8)
        assert np.ptp(full["couplings/w"][()]) == 0            # tied
        assert np.ptp(full["couplings/a"][()]) > 0             # untied
        np.testing.assert_array_equal(full["couplings/a"][()], resumed["couplings/a"][()])
        np.testing.assert_array_equal(full["history/a_minus_s"][()], resumed["history/a_minus_s"][()])
        # F at epochs 0, 3 and the last; the interrupted run also estimated it at its own end (2)
        assert list(full["free_energy/epoch"][()]) == [0, 3, 5]
        assert list(resumed["free_energy/epoch"][()]) == [0, 2, 3, 5]
        np.testing.assert_array_equal(full["free_energy/F"][()], resumed["free_energy/F"][()][[0, 2, 3]])
        assert np.all(full["free_energy/F_err"][()] > 0)
    # the output seeds an action (the same /couplings layout `qftml sample` reads)
    from qftml.io.couplings import action_from_couplings
    act = action_from_couplings(str(tmp_path / "full.h5"), qftml.Lattice((8, 8), comm=MPI.COMM_SELF))
    assert act.couplings()["a"].shape == (8, 8)


@pytest.mark.parametrize("override, message", [
    ("training.lr=0.0", "training.lr"),
    ("target.mu2=-0.5", "not normalisable"),
    ("model.b_range=[-0.1, 0.2]", "b_range"),
    ("model.learn=['g']", "extra links"),
])
def test_learn_command_rejects_bad_configurations(tmp_path, capsys, override, message):
    cfg = tmp_path / "learn.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "out.h5"))
    assert _run_cli([str(cfg), "--quiet", "--set", override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.h5").exists()


def test_learn_command_rejects_replicas_not_dividing_ranks(tmp_path, capsys):
    cfg = tmp_path / "learn.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "out.h5"))
    assert _run_cli([str(cfg), "--quiet", "--replicas", str(MPI.COMM_WORLD.size + 1)]) == 2
    assert "divide" in capsys.readouterr().err


def _shared_dir(comm, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("learn")) if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def _learn(comm, cfg_file, path, replicas, *overrides, resume=False):
    from qftml.learning.driver import load_learn_config, run_learn

    cfg = load_learn_config(cfg_file, [f"output.path='{path}'", *overrides], comm)
    return run_learn(cfg, replicas=replicas, resume=resume, quiet=True, comm=comm)


def _copy_run(comm, src, dst):
    import shutil

    if comm.rank == 0:
        shutil.copy(src, dst)
        shutil.copy(src + ".ckpt", dst + ".ckpt")
    comm.Barrier()


def _read_run(path):
    import h5py

    with h5py.File(path) as f:
        return {k: f[k][()] for k in ("couplings/w", "couplings/a", "history/a_minus_s", "history/couplings/a/std",
                                      "free_energy/F", "free_energy/epoch")}


@pytest.mark.mpi
def test_learn_resumes_bitwise_on_the_same_ranks_and_on_fewer_ranks_per_replica(tmp_path_factory):
    """R replicas x 2 ranks: a run interrupted after 3 epochs and resumed on the same ranks equals
    the uninterrupted run bit for bit; resumed on one rank per replica it agrees to rounding (the
    chains do not depend on the grid; the allreduce sums of S - A round differently: rtol 1e-9 as
    for process grids)."""
    world = MPI.COMM_WORLD
    if world.size == 1:
        pytest.skip("needs at least 2 ranks: resuming on fewer ranks per replica")
    replicas = world.size // 2
    d = _shared_dir(world, tmp_path_factory)
    cfg = f"{d}/learn.toml"
    if world.rank == 0:
        with open(cfg, "w") as f:
            f.write(CONFIG.format(path=f"{d}/unused.h5"))
    world.Barrier()
    full = _learn(world, cfg, f"{d}/full.h5", replicas)
    assert full.epochs == 6
    _learn(world, cfg, f"{d}/part.h5", replicas, "training.epochs=3")
    for name in ("same", "fewer"):
        _copy_run(world, f"{d}/part.h5", f"{d}/{name}.h5")
    _learn(world, cfg, f"{d}/same.h5", replicas, resume=True)
    sub = world.Split(0 if world.rank < replicas else 1, world.rank)
    if world.rank < replicas:
        _learn(sub, cfg, f"{d}/fewer.h5", replicas, resume=True)
    sub.Free()
    world.Barrier()
    if world.rank == 0:
        ref, same, fewer = (_read_run(f"{d}/{n}.h5") for n in ("full", "same", "fewer"))
        assert list(ref["free_energy/epoch"]) == [0, 3, 5]
        for k, v in ref.items():  # the interrupted run also estimated F at its own end (epoch 2)
            np.testing.assert_array_equal(same[k][[0, 2, 3]] if k.startswith("free") else same[k], v, err_msg=k)
        assert np.ptp(ref["couplings/a"]) > 0
        for k in ("couplings/w", "couplings/a", "history/a_minus_s", "history/couplings/a/std"):
            np.testing.assert_allclose(fewer[k], ref[k], rtol=1e-9, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(fewer["free_energy/F"][[0, 2, 3]], ref["free_energy/F"], rtol=1e-9)
    world.Barrier()


def test_learn_command_writes_plots_and_rejects_a_resume_with_other_physics(tmp_path, capsys):
    import matplotlib.image as mpimg

    cfg = tmp_path / "learn.toml"
    cfg.write_text(CONFIG.format(path=tmp_path / "run.h5"))
    assert _run_cli([str(cfg), "--set", "output.plots=true", "--set", "training.epochs=2"]) == 0
    out = capsys.readouterr().out
    assert "learned 2 epochs" in out and "bound at epoch 1" in out
    for name in ("run_couplings.png", "run_histograms.png"):
        img = mpimg.imread(tmp_path / name)
        assert img.shape[0] > 200 and np.ptp(img) > 0          # a picture with content
        assert f"wrote {tmp_path / name}" in out
    assert _run_cli([str(cfg), "--quiet", "--resume", "--set", "model.seed=2"]) == 2
    assert "model.seed: checkpoint 1, config 2" in capsys.readouterr().err
    assert _run_cli([str(cfg), "--quiet", "--resume", "--set", f"output.path='{tmp_path / 'none.h5'}'"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_history_appends_rows_and_truncates_for_a_resume(tmp_path):
    from qftml.io.history import History, read_history

    h = History(tmp_path / "h.h5", MPI.COMM_SELF, per_epoch=("history",), sparse=("free_energy",))
    assert not h.exists()
    h.create({"command": "test"})
    for e in range(5):
        h.append({"epoch": e, "couplings/w/mean": 0.5 * e})
        if e % 2 == 0:
            h.append({"epoch": e, "F": -e}, "free_energy")
    h.set_attrs("free_energy", {"F_A": -3.0})
    h.truncate(3)
    hist, fe = read_history(tmp_path / "h.h5"), read_history(tmp_path / "h.h5", "free_energy")
    assert list(hist["epoch"]) == [0, 1, 2] and list(hist["couplings/w/mean"]) == [0.0, 0.5, 1.0]
    assert list(fe["epoch"]) == [0, 2] and list(fe["F"]) == [0.0, -2.0]
    h.append({"epoch": 3, "couplings/w/mean": 7.0})
    assert list(read_history(tmp_path / "h.h5")["couplings/w/mean"]) == [0.0, 0.5, 1.0, 7.0]


def test_comparison_of_two_chains_of_a_gaussian_action_matches_the_exact_propagator():
    from qftml.learning.driver import compare_observables

    lat = qftml.Lattice(SHAPE, comm=MPI.COMM_SELF)
    comms = make_communicators(MPI.COMM_SELF, 1)
    comms.connect(lat)
    act = qftml.Action(lat, WA, AA, 0.0, 0.0)
    table = compare_observables(lat, act, act, 1500, 1, {"seed": 2, "algorithm": "independence", "hits": 1, "step": 1.0,
                                                          "thermalize": 50}, comms)
    g = exact.gaussian_propagator(SHAPE, WA, AA)
    for name, want in (("phi2", g[0, 0]), ("link_nn", g[1, 0])):
        s, ds, a, da = table[name]
        assert ds > 0 and da > 0 and s != a                     # two different chains
        assert abs(s - want) < 4 * ds and abs(a - want) < 4 * da, (name, table[name], want)
    assert np.isnan(table["link_extra"]).all()                  # A has no extra links


def test_random_couplings_are_uniform_and_reproducible():
    lat = qftml.Lattice((16, 16), comm=MPI.COMM_SELF)
    c = L.random_couplings(lat, 3, {"w": (0.5, 1.5), "a": (1.0, 2.0), "b": 0.2}, ())
    assert c["w"].shape == (16, 16, 2) and c["a"].shape == (16, 16) and c["b"] == 0.2
    for v, lo in ((c["w"], 0.5), (c["a"], 1.0)):
        assert v.min() >= lo and v.max() < lo + 1
        assert abs(v.mean() - (lo + 0.5)) < 4 * np.sqrt(1 / 12 / v.size)
    assert abs(np.corrcoef(c["w"][..., 0].ravel(), c["w"][..., 1].ravel())[0, 1]) < 4 / 16
    again = L.random_couplings(lat, 3, {"w": (0.5, 1.5), "a": (1.0, 2.0)}, ())
    np.testing.assert_array_equal(again["w"], c["w"])
    assert not np.array_equal(L.random_couplings(lat, 4, {"a": (1.0, 2.0)})["a"], c["a"])


@pytest.mark.mpi
def test_random_couplings_do_not_depend_on_the_process_grid():
    world = MPI.COMM_WORLD
    lat = qftml.Lattice((8, 12), comm=world)
    ranges = {"w": (0.5, 1.5), "g": (-0.1, 0.1), "a": (1.0, 2.0)}
    local = L.random_couplings(lat, 7, ranges, extra_offsets=[[1, 1], [1, -1]])
    solo = L.random_couplings(qftml.Lattice((8, 12), comm=MPI.COMM_SELF), 7, ranges, extra_offsets=[[1, 1], [1, -1]])
    for fam in ("w", "g", "a"):
        np.testing.assert_array_equal(local[fam], solo[fam][lat.local_slices])


class _NumpyPathEstimator(L.GradientEstimator):
    """The per-configuration step as it was before the fused pass (five density arrays, numpy sums)."""

    def _fill_row(self, field, row):
        dens = self.action_s.gradient_densities(field)
        s_c, a_c = self.action_s.couplings(), self.target.couplings()
        a_dens = self.target.gradient_densities(field)
        value = lambda c, dn: sum(float(np.vdot(c[f], dn[f])) for f in dn if dn[f].size)  # noqa: E731
        for fam, tied, _, lo, hi in self.columns:
            row[lo:hi] = dens[fam].sum() if tied else dens[fam].ravel()
        return value(s_c, dens) - value(a_c, a_dens)


@pytest.mark.parametrize("learn, tied", [(("w", "g", "a", "b", "r"), ()), (("w", "g", "a", "b"), ("w", "b")),
                                         (("a", "r"), ("a", "r"))])
def test_fused_density_pass_equals_the_numpy_path(learn, tied):
    """Action.density_row: untied densities bit for bit those of gradient_densities, tied sums and
    S - A equal to rounding; the whole estimator (with Fisher blocks) agrees with the old path."""
    shape = (8, 12)
    lat = qftml.Lattice(shape, comm=MPI.COMM_SELF)
    comms = make_communicators(MPI.COMM_SELF, 1)
    x = np.add.outer(np.arange(8), 0.3 * np.arange(12))
    couplings = {"w": np.stack([0.3 + 0.02 * np.sin(x), 0.3 + 0.02 * np.cos(x)], axis=-1), "g": 0.05,
                 "a": 1.3 + 0.1 * np.cos(x), "b": 0.2 + 0.01 * np.sin(x), "r": 0.05 * np.sin(2 * x)}
    model = L.Model(lat, couplings, learn=learn, tied=tied, extra_offsets=qftml.engine.action.NNN_2D)
    target = qftml.Action(lat, 0.35, 1.25, 0.22, 0.01)  # no diagonal links: A's value needs no g
    act = model.action()
    sampler = qftml.Sampler(act, seed=9, algorithm="independence")
    sampler.thermalize(20)
    new, old = (cls(model, target, comms, batch_bytes=8 * 3 * 600, fisher=True)
                for cls in (L.GradientEstimator, _NumpyPathEstimator))
    new.begin(act, shift=1.0), old.begin(act, shift=1.0)
    row_new, row_old = np.empty(new.width), np.empty(new.width)
    for _ in range(30):
        sampler.sweep(1)
        d_new, d_old = new._fill_row(sampler.field, row_new), old._fill_row(sampler.field, row_old)
        assert d_new == pytest.approx(d_old, rel=1e-12, abs=1e-10)
        for fam, t, _, lo, hi in new.columns:
            if t:
                assert row_new[lo] == pytest.approx(row_old[lo], rel=1e-12, abs=1e-12)
            else:
                assert np.array_equal(row_new[lo:hi], row_old[lo:hi]), fam
        new.add(sampler.field), old.add(sampler.field)
    a, b = new.finish(), old.finish()
    for fam in learn:
        np.testing.assert_allclose(a.grads[fam], b.grads[fam], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.fisher_site, b.fisher_site, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.fisher_tied, b.fisher_tied, rtol=1e-9, atol=1e-12)
    assert a.mean_s_minus_a == pytest.approx(b.mean_s_minus_a, rel=1e-12)
