"""The bipartite phi^4 network (DESIGN 1.6) and its block Gibbs sampler.

    S(phi, h) = -phi^T W h + visible self terms (r, a, b) + hidden self terms (s, m, n)

Exports:
    PRESETS                         {name: (visible kind, hidden kind)}: gaussian-gaussian,
                                    gaussian-bernoulli, bernoulli-bernoulli, phi4-bernoulli, phi4-phi4
    Network(visible, hidden, w)     visible, hidden: units.Layer; w (n_visible, n_hidden)
        .params -> {name: array}    w, v_lin, v_quad, v_quart, h_lin, ... (the trainable ones, views)
        .free_energy(v) -> (rows,)  F(v) = visible self terms - sum_j ln int/sum dh exp(...):
                                    p(v) = exp(-F(v)) / Z
        .hidden_mean(v), .visible_mean(h)   exact conditional means
        .gibbs(v, seed, step, index0) -> (h, v')   one block Gibbs sweep h ~ p(h|v), v' ~ p(v|h)
        .normalisable() -> str|None  the reason the model is not normalisable (DESIGN 1.1), or None
        .copy()
    make_network(preset or (kinds), n_visible, n_hidden, seed, scale) -> Network
                                    small random w (engine Philox, purpose network_init)
    joint_precision(net)            the (N_v + N_h) precision of a gaussian-gaussian network
Names in .params: "w", and "v_" / "h_" + the layer's coupling names (lin, quad, quart).
"""
from __future__ import annotations

import numpy as np

from qftml.engine import rng
from qftml.network.units import Layer

PRESETS = {
    "gaussian-gaussian": ("gaussian", "gaussian"),
    "gaussian-bernoulli": ("gaussian", "bernoulli"),
    "bernoulli-bernoulli": ("bernoulli", "bernoulli"),
    "phi4-bernoulli": ("phi4", "bernoulli"),
    "phi4-phi4": ("phi4", "phi4"),
}


def joint_precision(net) -> np.ndarray:
    """Q with S = x^T Q x / 2 + linear, x = (v, h): [[2 a, -W], [-W^T, 2 m]] (both layers gaussian)."""
    nv, nh = net.w.shape
    q = np.zeros((nv + nh, nv + nh))
    q[:nv, :nv] = np.diag(2.0 * net.visible.quad)
    q[nv:, nv:] = np.diag(2.0 * net.hidden.quad)
    q[:nv, nv:] = -net.w
    q[nv:, :nv] = -net.w.T
    return q


class Network:
    def __init__(self, visible: Layer, hidden: Layer, w):
        self.visible, self.hidden = visible, hidden
        self.w = np.array(w, dtype=float)
        if self.w.shape != (visible.n, hidden.n):
            raise ValueError(f"w must have shape ({visible.n}, {hidden.n}), got {self.w.shape}")

    @property
    def kinds(self):
        return self.visible.kind, self.hidden.kind

    @property
    def preset(self) -> str:
        return next((k for k, v in PRESETS.items() if v == self.kinds), "-".join(self.kinds))

    @property
    def params(self) -> dict:
        out = {"w": self.w}
        out.update({"v_" + k: v for k, v in self.visible.params.items()})
        out.update({"h_" + k: v for k, v in self.hidden.params.items()})
        return out

    def set_params(self, values: dict) -> None:
        for k, v in values.items():
            self.params[k][...] = v

    def copy(self) -> "Network":
        return Network(self.visible.copy(), self.hidden.copy(), self.w.copy())

    def normalisable(self) -> str | None:
        for name, layer in (("visible", self.visible), ("hidden", self.hidden)):
            why = layer.normalisable()
            if why:
                return f"{name} layer: {why}"
        if not np.isfinite(self.w).all():
            return "w is not finite"
        if self.kinds == ("gaussian", "gaussian"):
            lam = np.linalg.eigvalsh(joint_precision(self))[0]
            if not lam > 0:
                return (f"gaussian-gaussian: the joint quadratic form is not positive definite (smallest "
                        f"eigenvalue {lam:.4g}): the marginal of the visible units is not normalisable")
        return None

    def hidden_field(self, v):
        return np.asarray(v, dtype=float) @ self.w

    def visible_field(self, h):
        return np.asarray(h, dtype=float) @ self.w.T

    def free_energy(self, v):
        v = np.asarray(v, dtype=float)
        return self.visible.self_energy(v) - self.hidden.log_partition(self.hidden_field(v)).sum(axis=1)

    def hidden_mean(self, v):
        return self.hidden.mean(self.hidden_field(v))

    def visible_mean(self, h):
        return self.visible.mean(self.visible_field(h))

    def gibbs(self, v, seed: int, step: int, index0: int = 0, purpose: str = "network_chain"):
        """One block Gibbs sweep from rows v whose first row is global chain index0: the hidden draws
        use Philox step 2 step, the visible 2 step + 1; unit i of chain c has counter index c n + i."""
        h = self.hidden.sample(self.hidden_field(v), seed, 2 * step, index0 * self.hidden.n, purpose)
        v2 = self.visible.sample(self.visible_field(h), seed, 2 * step + 1, index0 * self.visible.n, purpose)
        return h, v2


def make_network(preset, n_visible: int, n_hidden: int, seed: int = 0, scale: float = 0.01, layer: int = 0,
                 visible_init=None) -> Network:
    """A network with w ~ scale * N(0, 1) (Philox: network_init, stream (layer,)) and default self terms;
    visible_init: optional {lin, quad, quart} for the visible layer (e.g. matched to the data)."""
    kinds = PRESETS[preset] if isinstance(preset, str) else tuple(preset)
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"network preset {preset!r} unknown (allowed: {', '.join(PRESETS)})")
    visible = Layer(kinds[0], n_visible, **(visible_init or {}))
    hidden = Layer(kinds[1], n_hidden)
    s = rng.derive_seed(seed, "network_init", layer)
    w = scale * rng.normal(s, "network_init", np.arange(n_visible * n_hidden)).reshape(n_visible, n_hidden)
    return Network(visible, hidden, w)
