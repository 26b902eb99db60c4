"""ln Z of a phi^4 network by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).

Path: S_beta(v, h) = (1 - beta) S_base(v) + beta S_vis(v) + S_hid(h) - beta v^T W h, beta: 0 -> 1.
S_base is a visible layer of the same kind (default: the network's own visible self terms; fitting
it to the data, base_from_data, lowers the variance); the couplings interpolate linearly, so every
intermediate is normalisable when both ends are. At beta = 0 the units are independent:
ln Z_0 = sum of 1D ln-integrals/sums (exact, qftml.engine.quartic), and exact draws start the chains.
Transitions: one block Gibbs sweep at beta_k (exact conditionals). Weights: with bernoulli or
gaussian hidden units the hidden layer is summed out in closed form (log p*_beta(v)); with phi4
hidden units the joint log p*_beta(v, h) is used (no 1D integrals per step).

    ln Z = ln Z_0 + ln mean(w),  error = std(w) / (sqrt(n) mean(w))   (delta method)

Chains are split over the ranks of `comm` (chain c draws with its global index: the estimate is the
same on any number of ranks up to the rounding of the gemm); one allgather at the end.

Exports:
    AisResult(log_z, error, log_w, steps, log_z0)
    schedule(steps) -> betas                    sigmoid-spaced (denser near both ends), 0 .. 1
    ais_log_z(net, chains, steps, seed, comm=None, base=None, stream=0) -> AisResult
    ais_check(net, chains, steps, seed, comm=None, base=None) -> (main, check)
                                                the second run: independent chains, steps // 4
    base_from_data(kind, data) -> Layer         independent units matched to the data's moments
    log_likelihood(net, data, log_z) -> (rows,) ln p(v) = -F(v) - ln Z
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qftml.engine import rng
from qftml.network.model import Network
from qftml.network.units import Layer


@dataclass
class AisResult:
    log_z: float
    error: float
    log_w: np.ndarray
    steps: int
    log_z0: float


def schedule(steps: int) -> np.ndarray:
    s = 1.0 / (1.0 + np.exp(-4.0 * np.linspace(-1.0, 1.0, steps + 1)))
    return (s - s[0]) / (s[-1] - s[0])


def base_from_data(kind: str, data) -> Layer:
    data = np.asarray(data, dtype=float)
    n = data.shape[1]
    if kind == "bernoulli":
        p = np.clip(data.mean(axis=0), 1e-3, 1 - 1e-3)
        return Layer("bernoulli", n, lin=-np.log(p / (1 - p)))
    mean, var = data.mean(axis=0), np.maximum(data.var(axis=0), 1e-3)
    if kind == "gaussian":
        return Layer("gaussian", n, lin=-mean / var, quad=0.5 / var)
    return Layer("phi4", n, lin=-mean / var, quad=0.5 / var, quart=np.full(n, 1e-3))


def _interpolated(net: Network, base: Layer, beta: float) -> Network:
    v = net.visible
    vis = Layer(v.kind, v.n, (1 - beta) * base.lin + beta * v.lin, (1 - beta) * base.quad + beta * v.quad,
                (1 - beta) * base.quart + beta * v.quart)
    return Network(vis, net.hidden, beta * net.w)


def _log_star(netb: Network, v, h, joint: bool):
    if joint:
        return -netb.visible.self_energy(v) - netb.hidden.self_energy(h) + np.einsum("ri,ri->r", v @ netb.w, h)
    return -netb.free_energy(v)


def _my_chains(chains: int, comm):
    size, rank = (1, 0) if comm is None else (comm.size, comm.rank)
    block = np.array_split(np.arange(chains), size)[rank]
    return (int(block[0]) if len(block) else 0), len(block)


def ais_log_z(net: Network, chains: int, steps: int, seed: int, comm=None, base: Layer | None = None,
              stream: int = 0) -> AisResult:
    base = base if base is not None else net.visible.copy()
    if base.kind != net.visible.kind or base.n != net.visible.n:
        raise ValueError("the AIS base layer must have the visible layer's kind and size")
    why = net.normalisable() or base.normalisable()
    if why:
        raise ValueError(f"AIS: the network is not normalisable: {why}")
    joint = net.hidden.kind == "phi4"
    s = rng.derive_seed(seed, "ais", stream)
    first, mine = _my_chains(chains, comm)
    nv, nh = net.w.shape
    log_z0 = float(base.log_partition(np.zeros((1, nv))).sum() + net.hidden.log_partition(np.zeros((1, nh))).sum())
    betas = schedule(steps)
    v = base.sample(np.zeros((mine, nv)), s, 0, first * nv)
    h = net.hidden.sample(np.zeros((mine, nh)), s, 1, first * nh)
    log_w = np.zeros(mine)
    prev = _interpolated(net, base, 0.0)
    for k in range(1, steps + 1):
        cur = _interpolated(net, base, betas[k])
        log_w += _log_star(cur, v, h, joint) - _log_star(prev, v, h, joint)
        if k < steps:
            h, v = cur.gibbs(v, s, k, first, purpose="ais")
        prev = cur
    all_w = np.concatenate(comm.allgather(log_w)) if comm is not None and comm.size > 1 else log_w
    top = all_w.max()
    w = np.exp(all_w - top)
    mean = w.mean()
    err = w.std(ddof=1) / (np.sqrt(len(w)) * mean) if len(w) > 1 else np.inf
    return AisResult(log_z=float(log_z0 + top + np.log(mean)), error=float(err), log_w=all_w, steps=steps,
                     log_z0=log_z0)


def ais_check(net, chains, steps, seed, comm=None, base=None):
    """The estimate and an independent one with a four times shorter schedule (a bias check: both
    should agree within their errors when the schedule is long enough)."""
    main = ais_log_z(net, chains, steps, seed, comm, base, stream=0)
    check = ais_log_z(net, chains, max(steps // 4, 2), seed, comm, base, stream=1)
    return main, check


def log_likelihood(net: Network, data, log_z: float):
    return -net.free_energy(data) - log_z
