"""Optimisers and learning-rate schedules (qftml.learning.optimizers) on problems with known answers."""
import numpy as np
import pytest

from qftml.learning import optimizers as O


def test_schedules_follow_their_formulas():
    assert O.Schedule("constant", 0.1)(50) == 0.1
    assert O.Schedule("exponential", 0.1, gamma=0.5)(3) == pytest.approx(0.1 / 8)
    assert O.Schedule("inverse", 0.1, tau=10)(10) == pytest.approx(0.05)
    assert O.Schedule("step", 0.1, gamma=0.5, step_every=4)(7) == pytest.approx(0.05)
    assert O.Schedule("exponential", 0.1, gamma=0.5, lr_min=0.02)(10) == 0.02


@pytest.mark.parametrize("bad", [dict(kind="constant", lr=0.0), dict(kind="constant", lr=-1.0),
                                 dict(kind="nope", lr=0.1), dict(kind="exponential", lr=0.1, gamma=1.5),
                                 dict(kind="inverse", lr=0.1, tau=0.0)])
def test_bad_schedules_are_rejected(bad):
    with pytest.raises(ValueError):
        O.Schedule(**bad)


def test_sgd_step_is_minus_lr_times_gradient():
    p = {"a": np.array([1.0, 2.0]), "t": np.array(3.0)}
    O.SGD(0.1).step(p, {"a": np.array([1.0, -1.0]), "t": np.array(2.0)})
    np.testing.assert_allclose(p["a"], [0.9, 2.1])
    assert float(p["t"]) == pytest.approx(2.8)


@pytest.mark.parametrize("name,lr", [("sgd", 0.1), ("momentum", 0.05), ("adam", 0.05)])
def test_optimizers_minimise_an_ill_conditioned_quadratic(name, lr):
    # f = 1/2 x^T H x - c^T x has its minimum at H^-1 c
    H = np.diag([1.0, 5.0])
    c = np.array([1.0, -2.0])
    opt = O.make_optimizer(name, O.Schedule("exponential", lr, gamma=0.999) if name == "adam" else lr)
    p = {"x": np.zeros(2)}
    for _ in range(3000):
        opt.step(p, {"x": H @ p["x"] - c})
    np.testing.assert_allclose(p["x"], np.linalg.solve(H, c), atol=1e-3)


def test_adam_first_step_has_size_lr():
    # with bias correction the first Adam step is lr * g / (|g| + eps)
    p = {"x": np.array([0.0, 0.0])}
    O.Adam(0.01).step(p, {"x": np.array([3.0, -0.002])})
    np.testing.assert_allclose(p["x"], [-0.01, 0.01], rtol=1e-4)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_state_dict_round_trip_resumes_exactly(name):
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=3) for _ in range(10)]
    a, p = O.make_optimizer(name, 0.1), {"x": np.ones(3)}
    for g in grads:
        a.step(p, {"x": g})
    b, q = O.make_optimizer(name, 0.1), {"x": np.ones(3)}
    for g in grads[:5]:
        b.step(q, {"x": g})
    c = O.make_optimizer(name, 0.1)
    c.load_state_dict({k: np.array(v) for k, v in b.state_dict().items()})
    for g in grads[5:]:
        c.step(q, {"x": g})
    np.testing.assert_array_equal(p["x"], q["x"])


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown"):
        O.make_optimizer("lbfgs", 0.1)
