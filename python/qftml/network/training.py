"""Training a phi^4 network by maximum likelihood on data (KL(q||p), DESIGN 1.5, 1.6).

    d <ln p(v)>_data / d theta = -<dS/dtheta>_{data, h ~ p(h|v)} + <dS/dtheta>_model

The data term uses the exact conditional moments of the hidden units (closed forms, or the 1D
quadrature for phi4 units); the model term comes from persistent chains (PCD, Tieleman 2008) or
from k Gibbs sweeps started at the mini-batch (CD-k), with the hidden moments of the chain's
visible state (Rao-Blackwellised). Every rank holds the data, computes its share of each global
mini-batch and of the chains, and one Allreduce per step sums the statistics: the gradient is the
same for any number of ranks (up to the rounding of the sums). The optimiser (qftml.learning.
optimizers) descends -gradient, its learning-rate schedule evaluated per epoch. After every step:
the floors quad >= quad_floor (gaussian units) and quart >= quart_floor (phi4 units), then the
normalisability guard: a step that leaves the model unnormalisable (e.g. a gaussian-gaussian
quadratic form that is not positive definite) is undone and NetworkStop is raised with the reason.

Random numbers (engine Philox): mini-batch order per epoch from (derive_seed(seed, network_batch,
layer), counter (row, epoch)); chain c's draws from (derive_seed(seed, network_chain, layer),
counter (c * units + unit, 2 g (+1)) at Gibbs step g); a persistent chain's state is its hidden
layer, started from p(h | v) of data rows drawn from the same stream.

Exports:
    NetworkStop                     training cannot continue (the message says why)
    Trainer(net, data, batch_size, lr | optimizer, method="pcd", k=1, chains=100, seed=0, layer=0,
            comm=None, learn=None, l2=0.0, quad_floor=1e-3, quart_floor=1e-3)
        .step(rows)                 one update with the global mini-batch rows (indices into data)
        .epoch(recon=True) -> dict  one pass in Philox order; recon_error after it, steps
        .gradient(rows) -> {name: array}   d<ln p>/dtheta estimate (advances the chains, no update)
        .recon_error() -> float     mean squared v -> E[h|v] -> E[v|h] error per unit
        .state_dict(), .load_state_dict(d)   epoch, step, optimiser, chains (global): resume bit for bit
"""
from __future__ import annotations

import math

import numpy as np

from qftml.engine import rng
from qftml.learning.optimizers import Schedule, make_optimizer
from qftml.network.model import Network


class NetworkStop(RuntimeError):
    """Training stopped: the update would make the network unnormalisable."""


def _split(n, comm):
    """(first, count) of this rank's share of n rows (np.array_split's blocks)."""
    size, rank = (1, 0) if comm is None else (comm.size, comm.rank)
    q, r = divmod(n, size)
    return rank * q + min(rank, r), q + (rank < r)


class _PerEpoch:
    """The optimiser's learning-rate schedule evaluated at the trainer's epoch (the optimisers count
    steps, and a network takes many mini-batch steps per epoch)."""

    def __init__(self, schedule, trainer):
        self.schedule, self.trainer = schedule, trainer

    def __call__(self, step):
        return self.schedule(self.trainer.epochs_done)


class Trainer:
    def __init__(self, net: Network, data, batch_size: int = 100, lr: float = 0.01, optimizer=None,
                 method: str = "pcd", k: int = 1, chains: int = 100, seed: int = 0, layer: int = 0, comm=None,
                 learn=None, l2: float = 0.0, quad_floor: float = 1e-3, quart_floor: float = 1e-3):
        if method not in ("pcd", "cd"):
            raise ValueError(f"training method {method!r} unknown (allowed: 'pcd', 'cd')")
        self.net, self.data = net, np.ascontiguousarray(data, dtype=float)
        self.batch_size, self.method, self.k, self.n_chains = int(batch_size), method, int(k), int(chains)
        self.comm, self.layer, self.l2 = comm, layer, float(l2)
        self.quad_floor, self.quart_floor = quad_floor, quart_floor
        self.opt = optimizer if optimizer is not None else make_optimizer("sgd", Schedule("constant", lr))
        self.opt.schedule = _PerEpoch(self.opt.schedule, self)
        self.learn = list(net.params) if learn is None else [p for p in net.params if p in learn]
        self._learned = {k_: v for k_, v in net.params.items() if k_ in self.learn}  # views, updated in place
        self.chain_seed = rng.derive_seed(seed, "network_chain", layer)
        self.batch_seed = rng.derive_seed(seed, "network_batch", layer)
        self.epochs_done, self.steps_done = 0, 0
        self.chain0, n_mine = _split(self.n_chains, comm)
        start = np.floor(rng.uniform(self.chain_seed, "network_chain", np.arange(self.n_chains), c2=0xFFFFFFFF)
                         * len(self.data)).astype(int)
        v0 = self.data[start[self.chain0:self.chain0 + n_mine]]
        # a persistent chain's state is its hidden layer h (drawn at Gibbs step g with Philox step 2 g);
        # each update draws v ~ p(v | h) (2 g + 1), uses it for the model term, then h ~ p(h | v)
        self.chains = net.hidden.sample(net.hidden_field(v0), self.chain_seed, 0, self.chain0 * net.hidden.n)

    # ------------------------------------------------------------------ statistics
    def _loss_terms(self, v_data, v_model, wd, wm):
        """This rank's share of -d<ln p>/dtheta = sum_rows c_r dS/dtheta(row r), c = +wd on the data rows,
        -wm on the model rows (both stacked: one gemm per term); the hidden statistics are the exact
        conditional moments."""
        net, learn = self.net, self.learn
        x = np.concatenate([v_data, v_model])
        c = self._row_weights(len(v_data), len(v_model), wd, wm)
        field = x @ net.w
        hmom = net.hidden.moments(field)
        n = len(v_data)
        self._advance_chains(field[n:], hmom["lin"][n:])
        out = {}
        if "w" in learn:  # dS/dw = -v h; -(x^T (h c)) = x^T (h (-c)) exactly (negation is exact)
            out["w"] = x.T @ (hmom["lin"] * self._neg_c[:, None])
        for name, stat in net.visible.stats(x).items():
            if "v_" + name in learn:
                out["v_" + name] = c @ stat
        for name, stat in hmom.items():
            if "h_" + name in learn:
                out["h_" + name] = c @ stat
        return out

    def _row_weights(self, n_data, n_model, wd, wm):
        """c of _loss_terms: wd on n_data rows, -wm on n_model rows (cached: the same every full batch)."""
        key = (n_data, n_model, wd, wm)
        if getattr(self, "_c_key", None) != key:
            self._c_key, self._c = key, np.concatenate([np.full(n_data, wd), np.full(n_model, -wm)])
            self._neg_c = -self._c
        return self._c

    def _model_sample(self, local_rows, first):
        """The visible states of the model term: k Gibbs sweeps of the persistent chains (from their
        hidden states; the closing h ~ p(h | v) is drawn in _advance_chains), or CD-k from the batch."""
        net, g0 = self.net, self.steps_done * self.k
        if self.method == "cd":
            v = local_rows
            for s in range(self.k):
                _, v = net.gibbs(v, self.chain_seed, g0 + s, first)
            return v
        h, c0 = self.chains, self.chain0
        for s in range(self.k):
            if s:
                h = net.hidden.sample(net.hidden_field(v), self.chain_seed, 2 * (g0 + s), c0 * net.hidden.n)
            v = net.visible.sample(net.visible_field(h), self.chain_seed, 2 * (g0 + s) + 1, c0 * net.visible.n)
        return v

    def _advance_chains(self, field, mean):
        """h ~ p(h | v) of the chains' last visible state (field = v W, mean = E[h | v])."""
        if self.method == "pcd":
            net = self.net
            self.chains = net.hidden.sample(field, self.chain_seed, 2 * (self.steps_done + 1) * self.k,
                                            self.chain0 * net.hidden.n, mean=mean)

    def _reduce(self, arrays):
        if self.comm is None or self.comm.size == 1:
            return arrays
        from mpi4py import MPI

        flat = np.concatenate([np.ravel(a) for a in arrays])
        out = np.empty_like(flat)
        self.comm.Allreduce(flat, out, op=MPI.SUM)
        parts, i = [], 0
        for a in arrays:
            n = np.size(a)
            parts.append(out[i:i + n].reshape(np.shape(a)))
            i += n
        return parts

    def _loss_gradient(self, rows):
        rows = np.asarray(rows)
        first, mine = _split(len(rows), self.comm)
        local = self.data[rows[first:first + mine]]
        v_model = self._model_sample(local, first)
        n_model = self.n_chains if self.method == "pcd" else len(rows)
        terms = self._loss_terms(local, v_model, 1.0 / len(rows), 1.0 / n_model)
        names = list(terms)
        grad = dict(zip(names, self._reduce([terms[n] for n in names])))
        if self.l2 and "w" in grad:
            grad["w"] = grad["w"] + self.l2 * self.net.w
        return grad

    def gradient(self, rows):
        """d <ln p>/d theta for the global mini-batch `rows`; advances the chains."""
        return {k_: -g for k_, g in self._loss_gradient(rows).items()}

    def recon_error(self) -> float:
        """Mean squared reconstruction error per unit, v -> E[h|v] -> E[v|h], over the data (one
        allreduce)."""
        first, mine = _split(len(self.data), self.comm)
        v = self.data[first:first + mine]
        err = ((v - self.net.visible_mean(self.net.hidden_mean(v))) ** 2).sum()
        return float(self._reduce([np.array(err)])[0]) / self.data.size

    def step(self, rows) -> None:
        grad = self._loss_gradient(rows)
        params = self._learned
        real = self.net.visible.kind != "bernoulli" or self.net.hidden.kind != "bernoulli"
        if not real:  # binary units: normalisable whenever the couplings are finite
            # one sum per array (a NaN or inf anywhere makes it non-finite); the names only on failure
            finite = math.isfinite(sum(float(np.add.reduce(g, axis=None)) for g in grad.values()))
            bad = [] if finite else [k_ for k_, g in grad.items() if not np.isfinite(g).all()] or list(grad)
            why = f"the gradient of {', '.join(bad)} is not finite" if bad else None
            before = {}
        else:
            before = {k_: v.copy() for k_, v in params.items()}
            self.opt.step(params, grad)
            self._floors()
            why = self.net.normalisable()
        if not real and not why:
            self.opt.step(params, grad)
        if why:
            self.net.set_params(before)
            raise NetworkStop(f"layer {self.layer}, epoch {self.epochs_done}, step {self.steps_done}: the update "
                              f"would make the network unnormalisable ({why}); stopped with the last valid "
                              f"couplings (lower the learning rate, or fix quad/quart with [training] learn)")
        self.steps_done += 1

    def _floors(self):
        for layer in (self.net.visible, self.net.hidden):
            if layer.kind == "gaussian" and self.quad_floor > 0:
                np.maximum(layer.quad, self.quad_floor, out=layer.quad)
            if layer.kind == "phi4" and self.quart_floor > 0:
                np.maximum(layer.quart, self.quart_floor, out=layer.quart)

    def batches(self):
        n = len(self.data)
        u = rng.uniform(self.batch_seed, "network_batch", np.arange(n), c2=self.epochs_done)
        order = np.argsort(u, kind="stable")
        return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]

    def epoch(self, recon: bool = True) -> dict:
        for rows in self.batches():
            self.step(rows)
        self.epochs_done += 1
        return {"recon_error": self.recon_error() if recon else float("nan"), "steps": self.steps_done}

    # ------------------------------------------------------------------ checkpoints
    def chain_visible(self):
        """This rank's chains' visible states E[v | h] (for plots; not part of the chain state)."""
        return self.net.visible_mean(self.chains)

    def global_chains(self):
        if self.comm is None or self.comm.size == 1:
            return self.chains.copy()
        return np.concatenate(self.comm.allgather(self.chains))

    def state_dict(self) -> dict:
        out = {"epochs_done": self.epochs_done, "steps_done": self.steps_done, "chains": self.global_chains()}
        out.update({"param/" + k_: v.copy() for k_, v in self.net.params.items()})
        out.update({"opt/" + k_: v for k_, v in self.opt.state_dict().items()})
        return out

    def load_state_dict(self, d: dict) -> None:
        self.epochs_done, self.steps_done = int(d["epochs_done"]), int(d["steps_done"])
        chains = np.asarray(d["chains"], dtype=float)
        self.chains = chains[self.chain0:self.chain0 + len(self.chains)].copy()
        self.net.set_params({k_[6:]: v for k_, v in d.items() if k_.startswith("param/")})
        self.opt.load_state_dict({k_[4:]: v for k_, v in d.items() if k_.startswith("opt/")})
