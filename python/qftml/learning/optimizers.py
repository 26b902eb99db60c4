"""Gradient-descent optimisers and learning-rate schedules for coupling learning.

Every optimiser updates a dict of parameter arrays in place, given a dict of gradients with the
same keys and shapes (scalars are 0-d arrays). Updates are purely local: gradients arrive already
reduced over ranks and replicas, so every rank applies the same rule to the block it owns.

Exports:
    SGD(lr)                         theta <- theta - eta_t g                 (the paper's rule)
    Momentum(lr, beta=0.9)          v <- beta v + g;  theta <- theta - eta_t v
    Adam(lr, beta1=0.9, beta2=0.999, eps=1e-8)
                                    m <- b1 m + (1-b1) g;  s <- b2 s + (1-b2) g^2
                                    theta <- theta - eta_t (m / (1-b1^t)) / (sqrt(s / (1-b2^t)) + eps)
    Schedule(kind, lr, gamma, tau, step_every, lr_min)   eta_t for epoch t:
        constant: eta;  exponential: eta gamma^t;  inverse: eta / (1 + t/tau);
        step: eta gamma^floor(t/step_every); every schedule is floored at lr_min.
    make_optimizer(name, schedule, **options)   "sgd" | "momentum" | "adam"
    OPTIMIZERS, SCHEDULES           the accepted names
State (velocities, moments, step count) is available as state_dict()/load_state_dict() so a
checkpoint can resume training exactly.
"""
from __future__ import annotations

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "exponential", "inverse", "step")


class Schedule:
    """Learning rate eta_t as a function of the epoch t (0-based)."""

    def __init__(self, kind: str = "constant", lr: float = 0.01, gamma: float = 1.0, tau: float = 1.0,
                 step_every: int = 1, lr_min: float = 0.0):
        if kind not in SCHEDULES:
            raise ValueError(f"learning-rate schedule {kind!r} unknown (allowed: {', '.join(SCHEDULES)})")
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        if kind in ("exponential", "step") and not 0 < gamma <= 1:
            raise ValueError(f"schedule gamma must be in (0, 1], got {gamma}")
        if kind == "inverse" and not tau > 0:
            raise ValueError(f"schedule tau must be > 0, got {tau}")
        if step_every < 1:
            raise ValueError(f"schedule step_every must be >= 1, got {step_every}")
        self.kind, self.lr, self.gamma, self.tau = kind, lr, gamma, tau
        self.step_every, self.lr_min = step_every, lr_min

    def __call__(self, epoch: int) -> float:
        if self.kind == "constant":
            eta = self.lr
        elif self.kind == "exponential":
            eta = self.lr * self.gamma ** epoch
        elif self.kind == "inverse":
            eta = self.lr / (1.0 + epoch / self.tau)
        else:
            eta = self.lr * self.gamma ** (epoch // self.step_every)
        return max(eta, self.lr_min)


class _Optimizer:
    def __init__(self, schedule: Schedule | float):
        self.schedule = schedule if isinstance(schedule, Schedule) else Schedule("constant", float(schedule))
        self.t = 0  # number of steps taken = epoch of the next step

    def lr(self) -> float:
        return self.schedule(self.t)

    def step(self, params: dict, grads: dict) -> None:
        """Update params[k] in place (arrays) with grads[k]; advances the epoch counter."""
        eta = self.lr()
        for k in params:
            if k in grads:  # in place: the same rounding as params[k] - eta * direction, one temporary less
                np.subtract(params[k], eta * self._direction(k, np.asarray(grads[k], dtype=float)), out=params[k])
        self.t += 1

    def _direction(self, key, g):
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])


class SGD(_Optimizer):
    """Plain gradient descent, theta <- theta - eta_t g."""

    def _direction(self, key, g):
        return g


class Momentum(_Optimizer):
    """Heavy-ball momentum: v <- beta v + g, theta <- theta - eta_t v."""

    def __init__(self, schedule, beta: float = 0.9):
        super().__init__(schedule)
        if not 0 <= beta < 1:
            raise ValueError(f"momentum beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.velocity = {}

    def _direction(self, key, g):
        v = self.velocity.get(key)
        v = g.copy() if v is None else self.beta * v + g
        self.velocity[key] = v
        return v

    def state_dict(self):
        return {"t": self.t, **{f"v/{k}": v for k, v in self.velocity.items()}}

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.velocity = {k[2:]: np.array(v, dtype=float) for k, v in state.items() if k.startswith("v/")}


class Adam(_Optimizer):
    """Adam with bias correction (Kingma & Ba)."""

    def __init__(self, schedule, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(schedule)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam betas must be in [0, 1), got {beta1}, {beta2}")
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m, self.s = {}, {}

    def _direction(self, key, g):
        m = self.m.get(key, np.zeros_like(g))
        s = self.s.get(key, np.zeros_like(g))
        m = self.beta1 * m + (1 - self.beta1) * g
        s = self.beta2 * s + (1 - self.beta2) * g * g
        self.m[key], self.s[key] = m, s
        t = self.t + 1
        m_hat = m / (1 - self.beta1 ** t)
        s_hat = s / (1 - self.beta2 ** t)
        return m_hat / (np.sqrt(s_hat) + self.eps)

    def state_dict(self):
        out = {"t": self.t}
        out.update({f"m/{k}": v for k, v in self.m.items()})
        out.update({f"s/{k}": v for k, v in self.s.items()})
        return out

    def load_state_dict(self, state):
        self.t = int(state["t"])
        self.m = {k[2:]: np.array(v, dtype=float) for k, v in state.items() if k.startswith("m/")}
        self.s = {k[2:]: np.array(v, dtype=float) for k, v in state.items() if k.startswith("s/")}


def make_optimizer(name: str, schedule: Schedule | float, momentum: float = 0.9, beta1: float = 0.9,
                   beta2: float = 0.999, eps: float = 1e-8) -> _Optimizer:
    """The optimiser called `name` ("sgd", "momentum", "adam") with the given schedule."""
    if name == "sgd":
        return SGD(schedule)
    if name == "momentum":
        return Momentum(schedule, beta=momentum)
    if name == "adam":
        return Adam(schedule, beta1=beta1, beta2=beta2, eps=eps)
    raise ValueError(f"optimizer {name!r} unknown (allowed: {', '.join(OPTIMIZERS)})")


__all__ = ["SGD", "Momentum", "Adam", "Schedule", "make_optimizer", "OPTIMIZERS", "SCHEDULES"]
