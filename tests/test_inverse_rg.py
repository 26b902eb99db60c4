"""The inverse RG (qftml.rg.inverse, qftml.rg.pipeline): exact right inverse, decomposition-independent
upscaling, a trained filter against the exact Gaussian propagator, gradients, errors, HDF5 round
trip, engine observables of upscaled blocks, and the `qftml irg` pipeline end to end (result
dataclass = results file, config errors, preemption and --resume)."""
import json
import os

import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml.exact import gaussian_kernel
from qftml.rg.inverse import ConfigurationMeasure, InverseRG, halo_pad, upscaling_noise
from qftml.rg.blocking import block_ensemble, block_local


def _self_lattice(shape):
    return qftml.Lattice(shape, comm=MPI.COMM_SELF)


def test_upscaling_then_blocking_returns_the_input_for_the_exact_right_inverse():
    rng = np.random.default_rng(0)
    zeta = 1.0905
    for b in (2, 4):
        coarse = rng.normal(size=(3, 8, 8))
        model = InverseRG.exact_right_inverse(b=b, scale=zeta)
        fine_lat, fine = model.upscale(_self_lattice((8, 8)), coarse)
        assert fine_lat.shape == (8 * b, 8 * b) and fine.shape == (3, 8 * b, 8 * b)
        back = block_ensemble(fine_lat, fine, b, scale=zeta)
        np.testing.assert_allclose(back, coarse, rtol=1e-14, atol=1e-14)


def test_noise_is_invisible_to_the_blocking_and_the_zero_mode_gain_is_exact():
    rng = np.random.default_rng(1)
    model = InverseRG(b=2, size=6, noise=True)
    model.f[0] = rng.normal(size=(6, 6))
    model.sigma = 0.7
    lat = _self_lattice((8, 8))
    coarse = rng.normal(size=(2, 8, 8))
    fl, noisy = model.upscale(lat, coarse, seed=4)
    model.noise = False
    _, clean = model.upscale(lat, coarse, seed=4)
    assert np.std(noisy - clean) > 0.5                          # the noise is there ...
    np.testing.assert_allclose(block_local(noisy[0], 2), block_local(clean[0], 2), atol=1e-12)  # ... but not in R_b
    for c, f in zip(coarse, noisy):
        assert np.isclose(f.mean(), model.gain() * c.mean(), rtol=1e-12, atol=1e-13)


def test_halo_pad_is_periodic_padding():
    x = np.arange(2 * 4 * 6, dtype=float).reshape(2, 4, 6)
    got = halo_pad(_self_lattice((4, 6)), x, 2)
    assert np.array_equal(got, np.pad(x, ((0, 0), (2, 2), (2, 2)), mode="wrap"))


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="ghost layer"):
        InverseRG(b=2, size=14).upscale(_self_lattice((2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="smaller than the stride"):
        InverseRG(b=4, size=2)
    with pytest.raises(ValueError, match="tanh"):
        InverseRG(filters=3)
    with pytest.raises(ValueError, match="not divisible by b"):
        InverseRG(b=4, size=4).train(_self_lattice((6, 6)), np.zeros((1, 6, 6)))


def test_weights_round_trip_through_hdf5(tmp_path):
    model = InverseRG(b=2, size=4, filters=3, activation="tanh", noise=True, scale=1.2, init_seed=3)
    model.sigma = 0.25
    model.history = [1.0, 0.5]
    model.save(tmp_path / "w.h5")
    back = InverseRG.load(tmp_path / "w.h5")
    assert np.array_equal(back.f, model.f) and np.array_equal(back.v, model.v)
    assert (back.b, back.size, back.filters, back.activation, back.scale, back.sigma) == (2, 4, 3, "tanh", 1.2, 0.25)
    x = np.random.default_rng(0).normal(size=(1, 4, 4))
    lat = _self_lattice((4, 4))
    assert np.array_equal(model.upscale(lat, x, seed=1)[1], back.upscale(lat, x, seed=1)[1])


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    model = InverseRG(b=2, size=4, filters=2, activation="tanh", init_seed=1)
    P = rng.normal(size=(3, 6, 6))      # padded coarse blocks (4x4 + 1 ghost per side)
    target = rng.normal(size=(3, 8, 8))
    comm = MPI.COMM_SELF
    n_total = float(target.size)
    loss, gf, gv = model.loss_and_gradient(P, target, comm, n_total, obs_weight=0.3)
    eps = 1e-6
    for idx in [(0, 0, 0), (1, 2, 3), (0, 3, 1)]:
        old = model.f[idx]
        model.f[idx] = old + eps
        lp = model.loss_and_gradient(P, target, comm, n_total, 0.3)[0]
        model.f[idx] = old - eps
        lm = model.loss_and_gradient(P, target, comm, n_total, 0.3)[0]
        model.f[idx] = old
        assert np.isclose(gf[idx], (lp - lm) / (2 * eps), rtol=1e-5, atol=1e-9)
    old = model.v[1]
    model.v[1] = old + eps
    lp = model.loss_and_gradient(P, target, comm, n_total, 0.3)[0]
    model.v[1] = old - eps
    lm = model.loss_and_gradient(P, target, comm, n_total, 0.3)[0]
    model.v[1] = old
    assert np.isclose(gv[1], (lp - lm) / (2 * eps), rtol=1e-5, atol=1e-9)


def _gaussian_ensemble(L, w, a, n, seed):
    """Independent exact draws of the Gaussian theory (FFT of white noise / sqrt K)."""
    K = gaussian_kernel((L, L), w, a)
    z = np.fft.fftn(np.random.default_rng(seed).normal(size=(n, L, L)), axes=(1, 2))
    return np.fft.ifftn(z / np.sqrt(K), axes=(1, 2)).real, K


def test_adam_reaches_the_normal_equation_minimum():
    cfg, _ = _gaussian_ensemble(8, 1.0, 0.5 * (0.3 + 4.0), 200, 5)
    lat = _self_lattice((8, 8))
    exact = InverseRG(b=2, size=2, noise=False)
    l_exact = exact.train(lat, cfg)["loss"]
    adam = InverseRG(b=2, size=2, noise=False)
    l_adam = adam.train(lat, cfg, obs_weight=1e-300, epochs=1500, lr=0.02)["loss"]
    assert l_exact <= l_adam * (1 + 1e-9)
    assert l_adam < l_exact * (1 + 1e-4)
    np.testing.assert_allclose(adam.f, exact.f, atol=2e-3)


def test_trained_filter_reproduces_the_gaussian_propagator_at_low_momenta():
    """Train on exact Gaussian draws at L = 16, upscale their blocked images (8 -> 16) and compare
    <|phi(k)|^2>/V with the exact propagator 1/K(k) at the lowest momenta (|n_mu| <= 1), within
    4 standard errors of the independent draws. The filter of size 2 fails this at k = 2 pi/L."""
    L, w, m2 = 16, 1.0, 0.1
    cfg, K = _gaussian_ensemble(L, w, 0.5 * (m2 + 4 * w), 8000, 1)
    lat = _self_lattice((L, L))
    model = InverseRG(b=2, size=6, noise=True)
    model.train(lat, cfg[:2000])
    assert abs(model.gain() - 1.0) < 1e-9          # symmetric neighbourhoods: the zero mode is kept
    _, up = model.upscale(_self_lattice((L // 2, L // 2)), block_ensemble(lat, cfg[2000:], 2), seed=3)
    power = np.abs(np.fft.fftn(up, axes=(1, 2))) ** 2 / L ** 2
    mean, err = power.mean(0), power.std(0) / np.sqrt(len(power))
    low = [(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]
    for k in low:
        assert abs(mean[k] - 1 / K[k]) < 4 * err[k], (k, mean[k] * K[k], err[k] * K[k])
    # the local variance (sum over all k) is fitted through the noise amplitude: within 3 %
    assert abs(np.mean(up ** 2) * K.size / np.sum(1 / K) - 1) < 0.03
    # the same test with the 2x2 filter (no overlap) fails at the first non-zero momentum
    crude = InverseRG(b=2, size=2, noise=True)
    crude.train(lat, cfg[:2000])
    _, up2 = crude.upscale(_self_lattice((L // 2, L // 2)), block_ensemble(lat, cfg[2000:], 2), seed=3)
    p2 = np.abs(np.fft.fftn(up2, axes=(1, 2))) ** 2 / L ** 2
    assert abs(p2.mean(0)[0, 1] - 1 / K[0, 1]) > 4 * p2.std(0)[0, 1] / np.sqrt(len(p2))


def _numpy_observables(phi, kappa, mu2, lam, h):
    """M, sum phi^2, sum phi^4, nearest-neighbour link sum, action and slice sums of a global 2D field."""
    links = sum(np.vdot(phi, np.roll(phi, -1, axis=mu)) for mu in range(phi.ndim))
    a = 0.5 * (mu2 + 2 * phi.ndim * kappa)
    s2, s4 = np.sum(phi ** 2), np.sum(phi ** 4)
    return {"M": phi.sum(), "sum_phi2": s2, "sum_phi4": s4, "sum_links_nn": links,
            "action": -kappa * links + a * s2 + 0.25 * lam * s4 - h * phi.sum(), "slice_sums": phi.sum(axis=1)}


def _check_measure(lat, phis, couplings):
    measure = ConfigurationMeasure(lat, *couplings)
    for phi in phis:                       # one Field for all: every set_local refreshes the ghosts
        got = measure(lat.local_block(phi))
        ref = _numpy_observables(phi, *couplings)
        for k in ("M", "sum_phi2", "sum_phi4", "action", "sum_links_nn"):
            assert np.isclose(got[k], ref[k], rtol=1e-12), k
        np.testing.assert_allclose(got["slice_sums"], ref["slice_sums"], rtol=1e-12, atol=1e-12)
        assert got["m"] == got["M"] / lat.volume and got["m2"] == got["m"] ** 2


def test_configuration_measure_is_the_homogeneous_theory_of_the_block():
    rng = np.random.default_rng(3)
    _check_measure(_self_lattice((8, 12)), rng.normal(size=(3, 8, 12)), (1.0, -0.9, 0.7, 0.1))


@pytest.mark.mpi
def test_configuration_measure_on_every_process_grid(comm):
    rng = np.random.default_rng(4)
    phis = rng.normal(size=(2, 16, 16))
    for grid in _grids(comm.size):
        _check_measure(qftml.Lattice((16, 16), comm=comm, grid=grid), phis, (0.9, -0.5, 0.4, -0.2))


def test_upscaling_noise_is_the_engine_philox_and_has_unit_variance():
    from qftml.engine import rng

    idx = np.arange(200000, dtype=np.uint64)
    eta = upscaling_noise(4, idx, 7, 2)
    np.testing.assert_array_equal(eta, (rng.uniform(4, "irg_noise", idx, c2=7, c3=2) - 0.5) * np.sqrt(12.0))
    n = len(eta)
    assert abs(eta.mean()) < 5 / np.sqrt(n) and abs(eta.var() - 1) < 5 * np.sqrt(0.8 / n)   # var(eta^2) = 4/5
    assert np.abs(eta).max() <= np.sqrt(3)
    # every counter is its own stream
    assert not np.array_equal(eta[:100], upscaling_noise(4, idx[:100], 8, 2))
    assert not np.array_equal(eta[:100], upscaling_noise(4, idx[:100], 7, 3))
    with pytest.raises(ValueError, match="counter"):
        upscaling_noise(4, idx[:2], 2 ** 32, 0)


def _grids(size):
    return [g for g in ([size, 1], [1, size], [2, size // 2]) if g[0] * g[1] == size and size % g[0] == 0]


@pytest.mark.mpi
def test_upscaling_is_bitwise_independent_of_the_process_grid(comm):
    rng = np.random.default_rng(7)
    coarse = rng.normal(size=(2, 16, 16))
    model = InverseRG(b=2, size=6, noise=True)
    model.f[0] = rng.normal(size=(6, 6))
    model.sigma = 0.4
    _, ref = model.upscale(_self_lattice((16, 16)), coarse, seed=11, first_config=5, level=2)
    _, ref2 = model.upscale(_self_lattice((32, 32)), ref, seed=11, first_config=5, level=3)
    for grid in _grids(comm.size):
        lat = qftml.Lattice((16, 16), comm=comm, grid=grid)
        fl, up = model.upscale(lat, np.stack([lat.local_block(c) for c in coarse]), seed=11, first_config=5, level=2)
        assert fl.grid == lat.grid and fl.local_shape == tuple(2 * n for n in lat.local_shape)
        assert np.array_equal(up, np.stack([fl.local_block(r) for r in ref]))
        fl2, up2 = model.upscale(fl, up, seed=11, first_config=5, level=3)    # a second step
        assert np.array_equal(up2, np.stack([fl2.local_block(r) for r in ref2]))
        obs = ConfigurationMeasure(fl2)(up2[0])     # the engine's reproducible sums: equal bit for bit
        assert obs["sum_links_nn"] == ConfigurationMeasure(_self_lattice((64, 64)))(ref2[0])["sum_links_nn"]


@pytest.mark.mpi
def test_distributed_training_matches_serial_training(comm):
    cfg, _ = _gaussian_ensemble(16, 1.0, 0.5 * (0.2 + 4.0), 64, 9)
    serial = InverseRG(b=2, size=6)
    serial.train(_self_lattice((16, 16)), cfg)
    for grid in _grids(comm.size):
        lat = qftml.Lattice((16, 16), comm=comm, grid=grid)
        model = InverseRG(b=2, size=6)
        info = model.train(lat, np.stack([lat.local_block(c) for c in cfg]))
        np.testing.assert_allclose(model.f, serial.f, rtol=1e-9, atol=1e-12)
        assert np.isclose(info["sigma"], serial.sigma, rtol=1e-9)


@pytest.mark.mpi
def test_filter_larger_than_the_local_block_is_an_error_on_every_rank(comm):
    if comm.size == 1:
        pytest.skip("needs several ranks for local blocks smaller than the lattice")
    lat = qftml.Lattice((2 * comm.size, 8), comm=comm, grid=[comm.size, 1])   # local blocks 2 sites wide
    with pytest.raises(ValueError, match="ghost layer"):
        InverseRG(b=2, size=14).upscale(lat, np.zeros((1,) + lat.local_shape))


def test_irg_command_end_to_end(tmp_path):
    """A tiny `qftml irg` run: direct 4^2 and 8^2 chains, training, 8 -> 16 -> 32, ordinary ensemble
    files per level, results file with the exponent table, plots; indivisible L is exit status 2."""
    import h5py

    from qftml.cli import main
    from qftml.io.ensembles import read_attrs, read_observables

    cfg = tmp_path / "irg.toml"
    cfg.write_text(f"""
[lattice]
shape = [8, 8]
[action]
mu2 = -0.94
[sampler]
sweeps = 3000
thermalize = 200
every = 10
seed = 2
[irg]
levels = 2
upscale_configs = 3
n_bins = 5
[output]
path = "{tmp_path / 'out' / 'r.h5'}"
""")
    assert main(["irg", str(cfg), "--quiet"]) == 0
    for name in ("configs", "fss", "flow"):
        assert (tmp_path / "out" / f"r_{name}.png").read_bytes()[:4] == b"\x89PNG"
    obs = read_observables(str(tmp_path / "out" / "r_L32.h5"))
    assert len(obs["m"]) == 3 and obs["slice_sums"].shape == (3, 32)
    assert read_attrs(str(tmp_path / "out" / "r_L32.h5"))["lattice"]["shape"] == [32, 32]
    with h5py.File(tmp_path / "out" / "r.h5", "r") as f:
        names = [e[0].decode() for e in f["exponents"][:]]
        assert names[:3] == ["gamma/nu", "beta/nu", "nu"]
        assert f.attrs["zero_mode_check"] < 1e-12
        assert list(f["levels/L"][:]) == [8.0, 16.0, 32.0]
    assert main(["irg", str(cfg), "--quiet", "--set", "lattice.shape=[10,10]"]) == 2


def test_irg_extra_pairs_report_every_size_pair(tmp_path):
    """extra_pairs = 1 samples L/b^2 as well and analyses the pairs (4, 8) and (8, 16) alike; for the
    main pair the Binder matching of the direct ensembles equals the flow of the upscaled L/b
    ensemble (U is invariant under the zero-mode gain), and gamma/nu from <m^2> at mu2* equals the
    upscaled-FSS value d + 2 log_b s up to s = 1/zeta (normal-equation rounding)."""
    import h5py

    from qftml.cli import main

    cfg = tmp_path / "irg.toml"
    cfg.write_text(f"""
[lattice]
shape = [16, 16]
[action]
mu2 = -0.94
[sampler]
sweeps = 4000
thermalize = 300
every = 10
seed = 3
[irg]
levels = 1
upscale_configs = 2
n_bins = 5
extra_pairs = 1
critical = "value"
plots = false
[output]
path = "{tmp_path / 'r.h5'}"
""")
    assert main(["irg", str(cfg), "--quiet"]) == 0
    with h5py.File(tmp_path / "r.h5", "r") as f:
        pairs = f["pairs"][:]
        table = {(e[0].decode(), e[1].decode()): (e[2], e[3]) for e in f["exponents"][:]}
        lam = f.attrs["flow_slope"]
    assert [(int(p["L_small"]), int(p["L_large"])) for p in pairs] == [(4, 8), (8, 16)]
    assert (tmp_path / "r_direct_L4.h5").exists()
    main_pair = pairs[-1]
    if np.isfinite(lam):
        assert np.isclose(main_pair["lambda"], lam, rtol=1e-6, atol=1e-9)
        assert np.isclose(main_pair["nu"], table[("nu", "Binder flow")][0], rtol=1e-6)
    assert np.isclose(main_pair["gamma_nu"], table[("gamma/nu", "upscaled FSS")][0], atol=1e-6)
    assert np.isclose(main_pair["dgamma_nu"], table[("gamma/nu", "upscaled FSS")][1], rtol=1e-3)
    # L / b^(1 + extra_pairs) must stay >= 4: exit status 2 with a clear message
    assert main(["irg", str(cfg), "--quiet", "--set", "irg.extra_pairs=2"]) == 2


_TINY = """
[lattice]
shape = [8, 8]
[action]
mu2 = -0.94
[sampler]
sweeps = 2000
thermalize = 200
every = 10
seed = 5
checkpoint_every = 500
[irg]
levels = 1
upscale_configs = 2
n_bins = 4
plots = false
[output]
path = "{path}"
"""


def _tiny(tmp_path, name="r"):
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(_TINY.format(path=tmp_path / f"{name}.h5"))
    return cfg


def _same(a, b):
    """Equal, NaN counting as equal to NaN (a pair without crossing has NaN errors)."""
    return np.array_equal(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True)


def test_pipeline_result_is_what_the_results_file_holds(tmp_path):
    import h5py

    from qftml.rg.pipeline import load_irg_config, run_irg

    res = run_irg(load_irg_config(_tiny(tmp_path)), comm=MPI.COMM_SELF, quiet=True, log=lambda msg: None)
    with h5py.File(res.paths["results"], "r") as f:
        for key in ("mu2_c", "dmu2_c", "mu2_star", "zeta", "dzeta", "gain", "train_mse", "noise_sigma",
                    "zero_mode_check"):
            assert _same(f.attrs[key], getattr(res, key)), key
        assert _same((f.attrs["flow_slope"], f.attrs["dflow_slope"]), (res.flow["slope"], res.flow["dslope"]))
        assert json.loads(f.attrs["timings"]) == res.timings
        assert {k: tuple(v) for k, v in json.loads(f.attrs["tau_int_abs_m"]).items()} == res.tau_int
        table = f["exponents"][:]
        assert [(e[0].decode(), e[1].decode()) for e in table] == [(e.name, e.method) for e in res.exponents]
        assert _same([list(e)[2:] for e in table], [(e.value, e.error, e.exact) for e in res.exponents])
        pairs = f["pairs"][:]
        assert len(pairs) == len(res.pairs) == 1
        for q in ("mu2_c", "U_c", "lambda", "nu", "gamma_nu", "beta_nu"):
            assert _same((pairs[0][q], pairs[0]["d" + q]), res.pairs[0][q]), q
        assert list(f["levels/L"][:]) == list(res.levels["L"]) == [8.0, 16.0]
        for k, dd in res.levels["per_level"].items():
            for q, v in dd.items():
                assert np.array_equal(f[f"levels/L{int(res.levels['L'][k])}/{q}"][:], v), (k, q)
        assert json.loads(f["levels"].attrs["files"]) == res.levels["files"]
        assert np.array_equal(f["flow/mu2"][:], res.flow["mu2"])
        assert _same(f["flow/mu2_prime"][:], res.flow["mu2_prime"])
        assert np.array_equal(f["weights/filters"][:], res.model.f) and f["weights"].attrs["sigma"] == res.model.sigma
        assert f.attrs["weights_file"] == res.paths["weights"]
    assert res.paths["direct"] == {4: str(tmp_path / "r_direct_L4.h5"), 8: str(tmp_path / "r_direct_L8.h5")}
    # the level's ensemble file holds the engine's observables of the carried configurations
    from qftml.io.ensembles import read_observables

    assert np.array_equal(read_observables(res.levels["files"][0])["m2"], res.levels["per_level"][1]["m2"])


@pytest.mark.parametrize("setting, key", [("action.extra='nnn'", "action.extra"), ("action.g=0.1", "action.g"),
                                          ("action.couplings='c.h5'", "action.couplings"),
                                          ("action.field='ising'", "action.field")])
def test_irg_rejects_what_the_homogeneous_pipeline_would_ignore(tmp_path, setting, key):
    from qftml.config import ConfigError
    from qftml.rg.pipeline import load_irg_config

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_irg_config(_tiny(tmp_path), [setting], MPI.COMM_SELF)


def test_preempted_direct_chains_resume_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """A stop request (as from SIGTERM) inside the first direct chain: run_irg raises Preempted after
    its checkpoint; resume=True continues that chain, starts the other, and every file and number
    equals an uninterrupted run's."""
    import h5py

    from qftml import ensemble_generation
    from qftml.io.checkpoints import checkpoint_path
    from qftml.rg.pipeline import Preempted, load_irg_config, run_irg

    quiet = dict(comm=MPI.COMM_SELF, quiet=True, log=lambda msg: None)
    ref = run_irg(load_irg_config(_tiny(tmp_path, "ref")), **quiet)
    calls = []

    def agreed(self):
        calls.append(1)
        return len(calls) == 4          # mid-production of the 4^2 chain
    monkeypatch.setattr(ensemble_generation.StopFlag, "agreed", agreed)
    cfg = load_irg_config(_tiny(tmp_path))
    with pytest.raises(Preempted, match="--resume"):
        run_irg(cfg, **quiet)
    small = tmp_path / "r_direct_L4.h5"
    assert os.path.exists(checkpoint_path(small)) and not (tmp_path / "r_direct_L8.h5").exists()
    with h5py.File(small, "r") as f:
        assert 0 < f.attrs["n_records"] < 200
    monkeypatch.undo()
    res = run_irg(cfg, resume=True, **quiet)
    for L in (4, 8):
        with h5py.File(res.paths["direct"][L], "r") as a, h5py.File(ref.paths["direct"][L], "r") as b:
            assert a.attrs["n_records"] == 200 and np.array_equal(a["configs"][:], b["configs"][:])
    assert _same([(e.value, e.error) for e in res.exponents], [(e.value, e.error) for e in ref.exponents])
    assert res.mu2_c == ref.mu2_c and np.array_equal(res.model.f, ref.model.f)
