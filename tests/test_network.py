"""phi^4 networks (qftml.network): AIS against exact oracles, Gaussian-Gaussian learning, the CLI
(presets on digits and lattice data, stacks, resume bit for bit, bad input), the sklearn API.

Tolerances: AIS estimates within 4 of their own standard errors of the exact ln Z (the bias of
ln mean(w), ~ error^2 / 2, is far below that); exact identities to rounding.
"""
import os

import h5py
import numpy as np
import pytest
from scipy import stats

from qftml.exact import network as exact
from qftml.network import ais
from qftml.network.model import make_network


def _net(preset, nv, nh, scale, seed=3):
    net = make_network(preset, nv, nh, seed=seed, scale=scale)
    net.hidden.lin[:] = 0.3
    net.visible.lin[:] = -0.2
    return net


@pytest.mark.parametrize("preset,nv,nh,scale", [
    ("bernoulli-bernoulli", 12, 10, 0.5), ("gaussian-bernoulli", 10, 8, 0.3), ("phi4-bernoulli", 5, 6, 0.5),
    ("gaussian-gaussian", 6, 4, 0.2),
])
def test_ais_matches_the_exact_log_z(preset, nv, nh, scale):
    net = _net(preset, nv, nh, scale)
    want = exact.gaussian_gaussian_log_z(net) if preset == "gaussian-gaussian" else exact.hidden_sum_log_z(net)
    main, check = ais.ais_check(net, 200, 300, seed=1)
    assert abs(main.log_z - want) < 4 * main.error
    assert abs(check.log_z - want) < 4 * check.error
    if net.visible.kind == "bernoulli":  # two exact sums agree (and test the free energy)
        assert exact.visible_sum_log_z(net) == pytest.approx(want, abs=1e-10)


def test_ais_for_phi4_hidden_units_matches_quadrature():
    """phi4-phi4 with one hidden unit: ln Z = ln int dh exp(-self(h)) prod_i Z_i(w_i h) by scipy quad."""
    from scipy import integrate

    net = _net("phi4-phi4", 4, 1, 0.6)
    def integrand(h):
        hh = np.array([[h]])
        return np.exp(-net.hidden.self_energy(hh)[0] + net.visible.log_partition(net.visible_field(hh)).sum())
    want = np.log(integrate.quad(integrand, -np.inf, np.inf, epsabs=0, epsrel=1e-12)[0])
    main = ais.ais_log_z(net, 200, 300, seed=2)
    assert abs(main.log_z - want) < 4 * main.error


def test_gaussian_gaussian_likelihood_is_the_exact_marginal():
    net = _net("gaussian-gaussian", 5, 3, 0.25)
    mean, prec = exact.gaussian_gaussian_marginal(net)
    v = np.linspace(-1, 1, 15).reshape(3, 5)
    log_z = exact.gaussian_gaussian_log_z(net)
    want = stats.multivariate_normal(mean, np.linalg.inv(prec)).logpdf(v)
    assert np.allclose(ais.log_likelihood(net, v, log_z), want, rtol=0, atol=1e-10)
    main = ais.ais_log_z(net, 200, 300, seed=4)
    assert np.all(np.abs(ais.log_likelihood(net, v, main.log_z) - want) < 4 * main.error)


def test_gaussian_gaussian_learns_the_empirical_precision():
    """Data from a Gaussian whose precision is diagonal minus rank 2; N_h = 2, m fixed: the learned
    marginal covariance must equal the data's empirical covariance to within 5 of the empirical
    covariance's own standard errors (the SGD noise must be below the data's sampling noise)."""
    from qftml.engine import rng
    from qftml.learning.optimizers import Schedule, make_optimizer
    from qftml.network.training import Trainer

    nv, n = 4, 4000
    u = np.array([[0.6, 0.3, 0.0, -0.4], [0.0, 0.5, 0.5, 0.2]]).T
    prec = np.diag([2.0, 1.5, 1.8, 1.2]) - u @ u.T
    z = rng.normal(7, "network_init", np.arange(n * nv)).reshape(n, nv)
    data = z @ np.linalg.cholesky(np.linalg.inv(prec)).T
    emp = np.cov(data.T, bias=True)
    se = np.sqrt((np.outer(np.diag(emp), np.diag(emp)) + emp ** 2) / n)
    net = make_network("gaussian-gaussian", nv, 2, seed=1, scale=0.1)
    opt = make_optimizer("adam", Schedule("exponential", 0.02, gamma=0.93))
    tr = Trainer(net, data, batch_size=200, optimizer=opt, chains=400, seed=5, learn=["w", "v_lin", "v_quad"])
    for _ in range(40):
        tr.epoch()
    _, model_prec = exact.gaussian_gaussian_marginal(net)
    assert np.all(np.abs(np.linalg.inv(model_prec) - emp) < 5 * se)


def test_normalisability_guard_stops_with_the_last_valid_couplings():
    from qftml.network.training import NetworkStop, Trainer

    data = np.linspace(-3, 3, 40).reshape(20, 2)
    net = make_network("gaussian-gaussian", 2, 2, seed=0, scale=0.1)
    net.w[:] = [[0.95, 0.0], [0.0, 0.95]]  # close to the edge: 2a 2m - w^2 = 1 - 0.9 > 0
    tr = Trainer(net, data * 10, batch_size=20, lr=1.0, chains=20, seed=0, learn=["w"])
    with pytest.raises(NetworkStop, match="not positive definite"):
        for _ in range(50):
            tr.epoch()
    assert net.normalisable() is None


# ----------------------------------------------------------------------------- the command
def _write(tmp_path, text, name="net.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BASE = """
[data]
source = "digits"
transform = "{transform}"
max_samples = 300
[network]
preset = "{preset}"
hidden = 8
[training]
epochs = {epochs}
batch_size = 20
chains = 20
ais_chains = 20
ais_steps = 40
checkpoint_every = 1
[output]
path = "{path}"
plots = false
"""


def _cli(*args):
    from qftml.cli import main

    return main(list(args))


@pytest.mark.parametrize("preset,transform", [
    ("bernoulli-bernoulli", "binarize"), ("gaussian-bernoulli", "standardize"), ("gaussian-gaussian", "standardize"),
    ("phi4-bernoulli", "standardize"), ("phi4-phi4", "standardize"),
])
def test_every_preset_trains_through_the_command(tmp_path, preset, transform):
    out = tmp_path / "o.h5"
    cfg = _write(tmp_path, BASE.format(preset=preset, transform=transform, epochs=1, path=out))
    assert _cli("network", cfg, "--quiet") == 0
    with h5py.File(out) as f:
        assert f["layers/0/w"].shape == (64, 8)
        assert np.isfinite(f["layers/0"].attrs["ll_test"])
        assert len(f["history/0/recon_error"]) == 1


def test_lattice_configurations_as_data(tmp_path):
    from qftml.cli import main

    sample = _write(tmp_path, f"""
[lattice]
shape = [4, 4]
[sampler]
sweeps = 60
thermalize = 20
seed = 3
[output]
path = "{tmp_path / 'ens.h5'}"
""", "sample.toml")
    assert main(["sample", sample, "--quiet"]) == 0
    cfg = _write(tmp_path, BASE.format(preset="phi4-bernoulli", transform="none", epochs=1, path=tmp_path / "o.h5")
                 .replace('source = "digits"', f'source = "ensemble"\npath = "{tmp_path / "ens.h5"}"'))
    assert main(["network", cfg, "--quiet"]) == 0
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["layers/0/w"].shape == (16, 8)


def test_stack_of_two_layers_end_to_end(tmp_path):
    from qftml.network.stack import read_layers, sample_stack

    out = tmp_path / "s.h5"
    cfg = _write(tmp_path, BASE.format(preset="bernoulli-bernoulli", transform="binarize", epochs=1, path=out)
                 .replace('[network]\npreset = "bernoulli-bernoulli"\nhidden = 8\n',
                          '[[layers]]\npreset = "bernoulli-bernoulli"\nhidden = 16\n'
                          '[[layers]]\npreset = "bernoulli-bernoulli"\nhidden = 6\nepochs = 2\n'))
    assert _cli("network", cfg, "--quiet") == 0
    nets = read_layers(out)
    assert [n.w.shape for n in nets] == [(64, 16), (16, 6)]
    with h5py.File(out) as f:
        assert len(f["history/1/recon_error"]) == 2
    v = sample_stack(nets, 5, seed=0, sweeps=3)
    assert v.shape == (5, 64) and np.all((v >= 0) & (v <= 1))


def test_resume_is_bit_identical(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    text = BASE.format(preset="phi4-bernoulli", transform="standardize", epochs=3, path="{path}")
    assert _cli("network", _write(tmp_path, text.replace("{path}", str(a)), "a.toml"), "--quiet") == 0
    cb = _write(tmp_path, text.replace("{path}", str(b)), "b.toml")
    assert _cli("network", cb, "--quiet", "--set", "training.epochs=1") == 0
    assert _cli("network", cb, "--quiet", "--resume") == 0
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in ("layers/0/w", "layers/0/visible/quart", "layers/0/hidden/lin", "history/0/recon_error"):
            assert np.array_equal(fa[name][()], fb[name][()]), name
        assert fa["layers/0"].attrs["log_z"] == fb["layers/0"].attrs["log_z"]


@pytest.mark.parametrize("change,message", [
    ("binary", "binary data"), ("nan", "NaN"), ("quart", "not normalisable"), ("size", "shape"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, change, message):
    out = tmp_path / "o.h5"
    text = BASE.format(preset="bernoulli-bernoulli", transform="none", epochs=1, path=out)
    if change == "nan":
        x = np.ones((10, 4))
        x[3, 2] = np.nan
        np.save(tmp_path / "x.npy", x)
        text = text.replace('source = "digits"', f'source = "npy"\npath = "{tmp_path / "x.npy"}"')
        text = text.replace('preset = "bernoulli-bernoulli"', 'preset = "gaussian-bernoulli"')
    if change == "quart":
        text = text.replace('preset = "bernoulli-bernoulli"', 'preset = "phi4-phi4"\nh_quart = -0.1')
    if change == "size":
        text = text.replace("hidden = 8", "hidden = 8\nvisible = 10")
    assert _cli("network", _write(tmp_path, text), "--quiet") == 2
    assert message in capsys.readouterr().err
    assert not os.path.exists(out) and not os.path.exists(str(out) + ".ckpt")


# ----------------------------------------------------------------------------- sklearn API
def test_estimator_api_in_pipeline_and_grid_search():
    from sklearn.base import clone
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    from qftml.network.estimator import PhiNetwork

    d = load_digits()
    x, y = (d.data[:400] / 16 > 0.5).astype(float), d.target[:400]
    est = PhiNetwork(n_components=8, n_iter=1, ais_steps=30, ais_chains=10)
    assert clone(est).get_params() == est.get_params()
    assert est.set_params(n_components=6).n_components == 6
    pipe = Pipeline([("net", est), ("clf", LogisticRegression(max_iter=100))]).fit(x, y)
    assert pipe.named_steps["net"].transform(x).shape == (400, 6)
    grid = GridSearchCV(PhiNetwork(n_iter=1, ais_steps=30, ais_chains=10), {"n_components": [3, 5]}, cv=2).fit(x)
    assert grid.best_params_["n_components"] in (3, 5)
    m = PhiNetwork(n_components=5, n_iter=1, ais_steps=30, ais_chains=10).fit(x)
    assert m.score_samples(x[:4]).shape == (4,) and np.isfinite(m.score(x))
    s = m.sample(3, sweeps=2)
    assert s.shape == (3, 64) and np.isin(s, (0, 1)).all()
    m.partial_fit(x[:50])
    assert m.trainer_.epochs_done == 2


@pytest.mark.parametrize("n,index0,step", [(1, 7, 3), (37, 2 ** 33 + 5, 2 ** 32 + 9), (640, 0, 5), (1000, 123456, 0)])
def test_bernoulli_draws_are_the_uniforms_below_p(n, index0, step):
    """engine.rng.bernoulli (one C++ pass, AVX-512 blocks of 32 and a scalar tail) draws exactly
    uniform_range(...) < p: the same Philox counters, the same comparison."""
    from qftml.engine import rng

    p = rng.uniform(5, "network_sample", np.arange(n))
    s = rng.derive_seed(9, "network_chain", 0)
    want = (rng.uniform_range(s, "network_chain", index0, n, c2=step) < p).astype(float)
    np.testing.assert_array_equal(rng.bernoulli(s, "network_chain", index0, p, c2=step), want)
    assert rng.bernoulli(s, "network_chain", index0, p.reshape(1, n), c2=step).shape == (1, n)
