"""PhiNetwork: a phi^4 network with the scikit-learn estimator API (like sklearn's BernoulliRBM).

    PhiNetwork(preset="bernoulli-bernoulli", n_components=64, learning_rate=0.05, batch_size=10,
               n_iter=10, method="pcd", k=1, n_chains=100, optimizer="sgd", l2=0.0, init_scale=0.01,
               ais_chains=100, ais_steps=1000, seed=0, comm=None)
        fit(X, y=None)          n_iter epochs of mini-batch training (qftml.network.training.Trainer)
        partial_fit(X, y=None)  one mini-batch pass over X, keeping the chains and optimiser state
        transform(X)            hidden conditional means E[h | v]
        score_samples(X)        ln p(v) per sample: -F(v) - ln Z, ln Z by AIS (cached per fit state)
        score(X, y=None)        mean of score_samples (what GridSearchCV maximises)
        sample(n, sweeps=200)   model samples: a Gibbs chain per sample from independent units
        log_z_, log_z_err_      the last AIS estimate; network_ (qftml.network.Network), components_ (w^T)
get_params / set_params come from sklearn.base.BaseEstimator: the estimator clones, pipelines and
grid-searches like any scikit-learn transformer. Random streams: the engine's Philox (seed).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from qftml.network.model import make_network


class PhiNetwork(TransformerMixin, BaseEstimator):
    def __init__(self, preset="bernoulli-bernoulli", n_components=64, learning_rate=0.05, batch_size=10,
                 n_iter=10, method="pcd", k=1, n_chains=100, optimizer="sgd", l2=0.0, init_scale=0.01,
                 ais_chains=100, ais_steps=1000, seed=0, comm=None):
        self.preset, self.n_components, self.learning_rate = preset, n_components, learning_rate
        self.batch_size, self.n_iter, self.method, self.k, self.n_chains = batch_size, n_iter, method, k, n_chains
        self.optimizer, self.l2, self.init_scale = optimizer, l2, init_scale
        self.ais_chains, self.ais_steps, self.seed, self.comm = ais_chains, ais_steps, seed, comm

    def _check(self, X):
        X = np.asarray(X, dtype=float)
        if X.ndim != 2:
            raise ValueError(f"X must be 2D (samples, features), got shape {X.shape}")
        return X

    def _init(self, X):
        from qftml.learning.optimizers import Schedule, make_optimizer
        from qftml.network.training import Trainer

        net = make_network(self.preset, X.shape[1], self.n_components, seed=self.seed, scale=self.init_scale)
        why = net.visible.check_data(X, "PhiNetwork.fit")
        if why:
            raise ValueError(why)
        net.visible.center(X)  # as `qftml network`: lin from the data's means
        opt = make_optimizer(self.optimizer, Schedule("constant", self.learning_rate))
        self.trainer_ = Trainer(net, X, batch_size=self.batch_size, optimizer=opt, method=self.method, k=self.k,
                                chains=self.n_chains, seed=self.seed, comm=self.comm, l2=self.l2)
        self.network_ = net
        self._log_z = None

    def fit(self, X, y=None):
        X = self._check(X)
        self._init(X)
        for _ in range(self.n_iter):
            self.trainer_.epoch(recon=False)  # no per-epoch diagnostics (sklearn's fit with verbose=0)
        self._log_z = None
        return self

    def partial_fit(self, X, y=None):
        X = self._check(X)
        if not hasattr(self, "trainer_"):
            self._init(X)
        why = self.network_.visible.check_data(X, "PhiNetwork.partial_fit")
        if why:
            raise ValueError(why)
        self.trainer_.data = np.ascontiguousarray(X)
        for rows in self.trainer_.batches():
            self.trainer_.step(rows)
        self.trainer_.epochs_done += 1
        self._log_z = None
        return self

    @property
    def components_(self):
        return self.network_.w.T

    def transform(self, X):
        return self.network_.hidden_mean(self._check(X))

    def _ais(self):
        if self._log_z is None:
            from qftml.network import ais

            base = ais.base_from_data(self.network_.visible.kind, self.trainer_.data) \
                if self.network_.visible.kind != "phi4" else None
            r = ais.ais_log_z(self.network_, self.ais_chains, self.ais_steps, self.seed, self.comm, base)
            self._log_z = (r.log_z, r.error)
        return self._log_z

    @property
    def log_z_(self):
        return self._ais()[0]

    @property
    def log_z_err_(self):
        return self._ais()[1]

    def score_samples(self, X):
        return -self.network_.free_energy(self._check(X)) - self.log_z_

    def score(self, X, y=None):
        return float(np.mean(self.score_samples(X)))

    def sample(self, n, sweeps=200):
        from qftml.engine import rng

        net = self.network_
        s = rng.derive_seed(self.seed, "network_sample", 0xFFFF)
        v = net.visible.sample(np.zeros((n, net.visible.n)), s, 0xFFFFFFF0, 0, purpose="network_sample")
        for t in range(sweeps):
            _, v = net.gibbs(v, s, t, 0, purpose="network_sample")
        return v
