"""Unit layers of a phi^4 network: the self terms of one layer and its exact 1D conditionals.

A layer of n units x with couplings (lin, quad, quart) contributes  sum_i lin_i x_i + quad_i x_i^2
+ quart_i x_i^4  to the action (DESIGN 1.6: (r, a, b) of the visible, (s, m, n) of the hidden layer).
Given the other layer, unit i sees the field J_i (= (W h)_i or (W^T phi)_i) and has the density
    p(x_i | J) ~ exp(-quad_i x^2 - quart_i x^4 + (J_i - lin_i) x)
on R (kinds "gaussian": quart = 0, "phi4") or on {0, 1} (kind "bernoulli": quad = quart = 0).

Exports:
    KINDS                               ("gaussian", "bernoulli", "phi4")
    Layer(kind, n, lin=0, quad=None, quart=None)
        .params -> {name: array}         the trainable couplings of the kind: lin (all), quad (gaussian,
                                          phi4), quart (phi4)
        .self_energy(x) -> (rows,)       sum_i lin x + quad x^2 + quart x^4
        .log_partition(J) -> (rows, n)   ln of the sum / integral over x of exp(-self + J x) per unit
        .moments(J) -> {name: (rows, n)} exact <dS/dparam> under the conditional: x, x^2, x^4
        .mean(J) -> (rows, n)            <x | J>
        .sample(J, seed, step, index0)   exact draws (engine Philox, purpose network_chain)
        .stats(x) -> {name: (rows, n)}   dS/dparam of given values x: x, x^2, x^4
        .normalisable() -> str | None    why the layer's conditionals are not normalisable, or None
        .check_data(x, what) -> str|None why data do not fit the layer (binary units, NaN), or None
        .center(data)                    lin from the data's means (Hinton's guide), in place: bernoulli p =
                                          the mean; gaussian, phi4: the maximum of exp(-a x^2 - b x^4 - lin x)
                                          at the mean (gaussian: the mean itself)
"""
from __future__ import annotations

import numpy as np

from qftml.engine import quartic, rng

KINDS = ("gaussian", "bernoulli", "phi4")
PARAMS = {"bernoulli": ("lin",), "gaussian": ("lin", "quad"), "phi4": ("lin", "quad", "quart")}


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    """1 / (1 + e^-x), in place on a fresh array (e^-x overflows to inf for x < -709: the result is 0,
    as it should; numpy's exp is vectorised, scipy's expit is not)."""
    with np.errstate(over="ignore"):
        out = np.exp(-x)
    out += 1.0
    return np.reciprocal(out, out=out)


class Layer:
    def __init__(self, kind: str, n: int, lin=0.0, quad=None, quart=None):
        if kind not in KINDS:
            raise ValueError(f"unit kind {kind!r} unknown (allowed: {', '.join(KINDS)})")
        self.kind, self.n = kind, int(n)
        self.lin = np.array(np.broadcast_to(np.asarray(lin, dtype=float), (self.n,)))
        default_quad = 0.5 if kind != "bernoulli" else 0.0
        self.quad = np.array(np.broadcast_to(np.asarray(default_quad if quad is None else quad, dtype=float),
                                             (self.n,)))
        default_quart = 0.0 if kind != "phi4" else 0.05
        self.quart = np.array(np.broadcast_to(np.asarray(default_quart if quart is None else quart, dtype=float),
                                              (self.n,)))
        if kind != "phi4":
            self.quart[:] = 0.0
        if kind == "bernoulli":
            self.quad[:] = 0.0

    @property
    def params(self) -> dict:
        return {k: getattr(self, k) for k in PARAMS[self.kind]}

    def normalisable(self) -> str | None:
        for k in PARAMS[self.kind]:
            if not np.isfinite(getattr(self, k)).all():
                return f"{self.kind} couplings {k} are not finite"
        if self.kind == "phi4" and not (self.quart > 0).all():
            i = int(np.argmin(self.quart))
            return f"phi4 units need quartic couplings > 0 (unit {i}: {self.quart[i]:.4g})"
        if self.kind == "gaussian" and not (self.quad > 0).all():
            i = int(np.argmin(self.quad))
            return f"gaussian units need quadratic couplings > 0 (unit {i}: {self.quad[i]:.4g})"
        return None

    def self_energy(self, x):
        x = np.asarray(x, dtype=float)
        e = x @ self.lin
        if self.kind != "bernoulli":
            x2 = x * x
            e = e + x2 @ self.quad
            if self.kind == "phi4":
                e = e + (x2 * x2) @ self.quart
        return e

    def log_partition(self, J):
        field = np.asarray(J, dtype=float) - self.lin
        if self.kind == "bernoulli":
            return _softplus(field)
        return quartic.integral(self.quad, self.quart, field)[0]

    def moments(self, J):
        field = np.asarray(J, dtype=float) - self.lin
        if self.kind == "bernoulli":
            return {"lin": _sigmoid(field)}
        if self.kind == "gaussian":
            mu = field / (2.0 * self.quad)
            return {"lin": mu, "quad": mu * mu + 1.0 / (2.0 * self.quad)}
        _, m1, m2, m4 = quartic.integral(self.quad, self.quart, field)
        return {"lin": m1, "quad": m2, "quart": m4}

    def mean(self, J):
        field = np.asarray(J, dtype=float) - self.lin
        if self.kind == "bernoulli":
            return _sigmoid(field)
        if self.kind == "gaussian":
            return field / (2.0 * self.quad)
        return quartic.integral(self.quad, self.quart, field)[1]

    def sample(self, J, seed: int, step: int, index0: int = 0, purpose: str = "network_chain", mean=None):
        """Exact draws given the fields J (rows, n); row r, unit i uses the counter index
        index0 + r * n + i at `step` of the stream (seed, purpose). mean: E[x | J] if already known
        (bernoulli: the probabilities; saves recomputing them)."""
        if self.kind == "bernoulli":
            p = _sigmoid(np.asarray(J, dtype=float) - self.lin) if mean is None else mean
            return rng.bernoulli(seed, purpose, index0, p, c2=step)  # uniform_range(...) < p, in one pass
        field = np.asarray(J, dtype=float) - self.lin
        x, _ = quartic.sample(self.quad, self.quart, field, seed, purpose, index0, step)
        return x

    def stats(self, x) -> dict:
        x = np.asarray(x, dtype=float)
        out = {"lin": x}
        if self.kind != "bernoulli":
            x2 = x * x
            out["quad"] = x2
            if self.kind == "phi4":
                out["quart"] = x2 * x2
        return out

    def check_data(self, x, what: str) -> str | None:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n:
            return f"{what}: {self.n} {self.kind} units need data of shape (samples, {self.n}), got {x.shape}"
        if not np.isfinite(x).all():
            return f"{what}: the data contain NaN or infinite values"
        if self.kind == "bernoulli" and not np.isin(x, (0.0, 1.0)).all():
            return f"{what}: bernoulli units need binary data (0 or 1); binarise the data or use gaussian/phi4 units"
        return None

    def center(self, data) -> None:
        mean = np.asarray(data, dtype=float).mean(axis=0)
        if self.kind == "bernoulli":
            p = np.clip(mean, 1e-3, 1 - 1e-3)
            self.lin[:] = -np.log(p / (1 - p))
        else:
            self.lin[:] = -(2.0 * self.quad * mean + 4.0 * self.quart * mean ** 3)

    def copy(self) -> "Layer":
        return Layer(self.kind, self.n, self.lin.copy(), self.quad.copy(), self.quart.copy())
