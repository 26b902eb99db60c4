"""The inverse RG transformation: a learned transposed convolution on the distributed lattice (DESIGN 1.7).

Model (stride b, filter size k per direction, F filters, tap offset o = (k - b) // 2):

    h_c(x)  = sum_X f_c[x - b X + o] phi'_X          (transposed convolution, periodic; 0 <= x - bX + o < k)
    phi(x)  = h_1(x)                                  activation "linear" (F = 1)
    phi(x)  = sum_c v_c tanh(h_c(x))                  activation "tanh"   (F >= 1)
            + sigma * (eta_x - b^-d sum_{y in block(x)} eta_y)     optional noise, <eta> = 0, <eta^2> = 1

The noise lives in the kernel of the block average, so it changes nothing that R_b sees (the
magnetisation in particular); its amplitude sigma is fitted to the training residual. eta is
uniform, sqrt(12) (u - 1/2), with u from the engine's Philox (qftml.engine.rng.uniform, purpose
"irg_noise") at counter (global fine-site index, configuration index, level), so an upscaled
ensemble is the same bit for bit for any process grid.

Training reconstructs configurations at L from their blocked images R_b(phi) at L/b by the mean
squared error, optionally plus obs_weight * mean_cfg (mean_x phi_hat^2 - mean_x phi^2)^2 (matching
the local variance). Linear models without the observable term are solved exactly (normal
equations); otherwise Adam (qftml.learning.optimizers.Adam, eps = 1e-12) runs on the full batch.
Every rank works on its own blocks; the normal equations / gradients are summed over ranks with one
allreduce per step.

Upscaling: each rank pads its coarse block with g = ghost_width ghosts per side by a halo exchange
(mpi4py Sendrecv on the lattice's communicator, neighbours from the process grid, message tags
qftml.collective.TAGS["halo_pad"]; the engine's Field has one ghost layer in checkerboard storage,
the filters need g of them in natural order), applies the filters and keeps the process grid:
local blocks grow by b per direction.

Zero mode: sum_x phi(x) = (sum_u f_u) sum_X phi'_X for the linear model, so each upscaling step
multiplies the magnetisation by the gain s = b^-d sum_u f_u exactly. FSS exponents of upscaled
ensembles read off <|m|> ~ L^(-beta/nu), chi ~ L^(gamma/nu) therefore follow from s alone:
beta/nu = -log_b s, gamma/nu = d + 2 log_b s (see docs/irg.md).

Exports:
    InverseRG(b=2, size=4, filters=1, ndim=2, activation="linear", noise=True, scale=1.0)
        .ghost_width  .gain()  .apply_padded(P)  .loss_and_gradient(P, target, ...)
        .train(lattice, local_configs, ...)  .upscale(lattice, local_configs, seed, ..., fine=None)
        .save(path_or_group)  InverseRG.load(path_or_group)   (HDF5)
        .exact_right_inverse(b, ndim, scale)   the filter with R_b(T(phi')) = phi' (k = b)
    halo_pad(lattice, local_batch, g)   (n, *local) -> (n, *(local + 2g)) periodic ghosts from neighbours
    fine_lattice(lattice, b)            Lattice(shape * b) with the same grid and communicator
    upscaling_noise(seed, index, config, level)   unit-variance uniform noise per global site index
    ConfigurationMeasure(lattice, kappa, mu2, lam, h)   (local block) -> qftml.measure's dict, with
                                        one engine Field and a homogeneous Action (the labelled
                                        couplings) reused for every configuration
"""
from __future__ import annotations

import itertools
import weakref

import h5py
import numpy as np
from mpi4py import MPI

from qftml.collective import TAGS
from qftml.engine import rng
from qftml.rg.blocking import block_ensemble, check_blockable, global_index


# ---------------------------------------------------------------- counter-based noise
def upscaling_noise(seed: int, index: np.ndarray, config: int, level: int) -> np.ndarray:
    """Unit-variance uniform noise sqrt(12) (u - 1/2), one per global index, u = the engine's Philox
    uniform (purpose "irg_noise") at counter (index, config, level): the same on every process grid."""
    if not (0 <= int(config) < 2 ** 32 and 0 <= int(level) < 2 ** 32):
        raise ValueError(f"noise counter out of range: configuration {config}, level {level} (each < 2^32)")
    u = rng.uniform(seed, "irg_noise", index, c2=int(config), c3=int(level))
    return (u - 0.5) * np.sqrt(12.0)


# ---------------------------------------------------------------- distributed geometry
def fine_lattice(lattice, b: int):
    """The lattice of the upscaled ensemble: extents times b, the same process grid and communicator."""
    from qftml.engine.lattice import Lattice

    return Lattice(tuple(int(L) * b for L in lattice.shape), comm=lattice.comm, grid=lattice.grid)


_NEIGHBOURS = weakref.WeakKeyDictionary()   # lattice -> its neighbour table (one allgather per lattice)


def _neighbours(lattice):
    """(minus, plus) ranks of lattice.comm for each direction, from the grid coordinates (cached)."""
    if lattice not in _NEIGHBOURS:
        _NEIGHBOURS[lattice] = _neighbour_table(lattice)
    return _NEIGHBOURS[lattice]


def _neighbour_table(lattice):
    comm = lattice.comm
    coords = comm.allgather(tuple(lattice.coords))
    where = {c: r for r, c in enumerate(coords)}
    me = tuple(lattice.coords)
    out = []
    for mu, g in enumerate(lattice.grid):
        def shifted(step):
            c = list(me)
            c[mu] = (c[mu] + step) % g
            return where[tuple(c)]
        out.append((shifted(-1), shifted(+1)))
    return out


def halo_pad(lattice, local_batch: np.ndarray, g: int) -> np.ndarray:
    """Pad every configuration of this rank's block with g periodic ghosts per side (collective).

    Directions are done one after another on the already padded array, so corner ghosts are right.
    Raises ValueError if g exceeds a local extent (the ghosts would not come from the neighbour).
    """
    a = np.asarray(local_batch, dtype=np.float64)
    if g == 0:
        return a.copy()
    for mu, n in enumerate(lattice.local_shape):
        if g > n:
            raise ValueError(f"the filter needs {g} ghost layer(s) but the local block is only {n} site(s) "
                             f"wide in direction {mu} (local block {lattice.local_shape}); use a smaller "
                             f"filter, fewer ranks in that direction or a larger lattice")
    nbrs = _neighbours(lattice) if lattice.size > 1 else None
    comm = lattice.comm
    for mu in range(lattice.ndim):
        ax = 1 + mu
        if lattice.grid[mu] == 1:
            a = np.concatenate([a.take(range(a.shape[ax] - g, a.shape[ax]), axis=ax), a,
                                a.take(range(g), axis=ax)], axis=ax)
            continue
        minus, plus = nbrs[mu]
        n = a.shape[ax]
        low = np.ascontiguousarray(a.take(range(g), axis=ax))
        high = np.ascontiguousarray(a.take(range(n - g, n), axis=ax))
        from_minus = np.empty_like(high)
        from_plus = np.empty_like(low)
        tag = TAGS["halo_pad"] + 2 * mu
        comm.Sendrecv(high, dest=plus, sendtag=tag, recvbuf=from_minus, source=minus, recvtag=tag)
        comm.Sendrecv(low, dest=minus, sendtag=tag + 1, recvbuf=from_plus, source=plus, recvtag=tag + 1)
        a = np.concatenate([from_minus, a, from_plus], axis=ax)
    return a


# ---------------------------------------------------------------- observables by the engine
class ConfigurationMeasure:
    """qftml.measure of configurations given as this rank's blocks on `lattice` (collective call).

    The action is the homogeneous theory (kappa, mu2, lam, h): for an upscaled ensemble it is a
    label, not the distribution the configurations come from. One engine Field and Action serve
    every configuration, so a measurement is one set_local (which refreshes the ghosts) and the
    engine's reproducible reduction: the same numbers on any process grid.
    """

    def __init__(self, lattice, kappa=1.0, mu2=-0.9515, lam=0.7, h=0.0):
        from qftml.engine.action import Action
        from qftml.engine.lattice import Field

        self.lattice = lattice
        self.field = Field(lattice)
        self.action = Action.homogeneous(lattice, kappa=kappa, mu2=mu2, lam=lam, h=h)

    def __call__(self, local: np.ndarray) -> dict:
        from qftml.engine.observables import measure

        self.field.local = local
        return measure(self.field, self.action)


# ---------------------------------------------------------------- the model
class InverseRG:
    """A transposed convolution with stride b (see the module docstring)."""

    def __init__(self, b: int = 2, size: int = 4, filters: int = 1, ndim: int = 2, activation: str = "linear",
                 noise: bool = True, scale: float = 1.0, init_seed: int = 0):
        if not isinstance(b, (int, np.integer)) or b < 2:
            raise ValueError(f"stride b must be an integer >= 2, got {b!r}")
        if size < b:
            raise ValueError(f"filter size {size} is smaller than the stride {b}: some fine sites would get nothing")
        if activation not in ("linear", "tanh"):
            raise ValueError(f"activation must be 'linear' or 'tanh', got {activation!r}")
        if activation == "linear" and filters != 1:
            raise ValueError("several filters need activation = 'tanh': linear filters just add up to one filter")
        self.b, self.size, self.filters, self.ndim = int(b), int(size), int(filters), int(ndim)
        self.activation, self.noise, self.scale = activation, bool(noise), float(scale)
        self.o = (self.size - self.b) // 2
        self.taps = []  # (u, j, s): filter offset, fine sub-position, coarse shift; x = b (X + s) + j
        for u in itertools.product(range(self.size), repeat=self.ndim):
            t = [ui - self.o for ui in u]
            self.taps.append((u, tuple(ti % self.b for ti in t), tuple(ti // self.b for ti in t)))
        self.ghost_width = max(max(abs(si) for si in s) for _, _, s in self.taps)
        self._by_subposition = {}
        for u, j, s in self.taps:
            self._by_subposition.setdefault(j, []).append((u, s))
        rng = np.random.default_rng(init_seed)
        fshape = (self.filters,) + (self.size,) * self.ndim
        if activation == "linear":
            self.f = np.full(fshape, 1.0 / self.size ** self.ndim * self.b ** self.ndim / max(self.scale, 1e-300))
            self.v = np.ones(self.filters)
        else:
            self.f = rng.normal(0.0, 0.5 / self.size ** (self.ndim / 2), fshape)
            self.v = rng.normal(0.0, 1.0 / np.sqrt(self.filters), self.filters)
        self.sigma = 0.0
        self.history = []

    # -- forward
    def _conv(self, P: np.ndarray, f: np.ndarray) -> np.ndarray:
        """Transposed convolution of padded coarse blocks P (n, *(m + 2g)) with one filter -> (n, *(b m))."""
        g, b = self.ghost_width, self.b
        m = [n - 2 * g for n in P.shape[1:]]
        out = np.empty((P.shape[0],) + tuple(b * mi for mi in m))
        for j, taps in self._by_subposition.items():
            acc = np.zeros((P.shape[0],) + tuple(m))   # contiguous accumulator, one strided store
            for u, s in taps:
                acc += f[u] * P[(slice(None),) + tuple(slice(g - si, g - si + mi) for si, mi in zip(s, m))]
            out[(slice(None),) + tuple(slice(ji, None, b) for ji in j)] = acc
        return out

    def _conv_filter_gradient(self, P: np.ndarray, G: np.ndarray) -> np.ndarray:
        """d/df[u] of sum_x G(x) h(x): the correlation of the fine-level gradient with the input."""
        g, b = self.ghost_width, self.b
        m = [n - 2 * g for n in P.shape[1:]]
        grad = np.zeros((self.size,) * self.ndim)
        for j, taps in self._by_subposition.items():
            Gj = np.ascontiguousarray(G[(slice(None),) + tuple(slice(ji, None, b) for ji in j)]).ravel()
            for u, s in taps:
                src = (slice(None),) + tuple(slice(g - si, g - si + mi) for si, mi in zip(s, m))
                grad[u] = np.dot(Gj, np.ascontiguousarray(P[src]).ravel())
        return grad

    def apply_padded(self, P: np.ndarray, hidden: bool = False):
        """The deterministic part of the upscaling for padded coarse blocks P -> fine blocks."""
        if self.activation == "linear":
            out = self._conv(P, self.f[0])
            return (out, None) if hidden else out
        hs = [self._conv(P, self.f[c]) for c in range(self.filters)]
        out = sum(self.v[c] * np.tanh(hs[c]) for c in range(self.filters))
        return (out, hs) if hidden else out

    def gain(self) -> float:
        """Zero-mode gain s = b^-d sum_u f_u of the linear model (magnetisation factor per step)."""
        if self.activation != "linear":
            raise ValueError("the zero-mode gain is a single number only for the linear model")
        return float(self.f[0].sum() / self.b ** self.ndim)

    @classmethod
    def exact_right_inverse(cls, b: int = 2, ndim: int = 2, scale: float = 1.0, noise: bool = False):
        """k = b, f = 1/scale: every fine site of a block gets phi'_X / scale, so R_b(T(phi')) = phi'."""
        model = cls(b=b, size=b, ndim=ndim, noise=noise, scale=scale)
        model.f[...] = 1.0 / scale
        return model

    # -- training
    def loss_and_gradient(self, P, target, comm, n_total, obs_weight=0.0):
        """Global loss (MSE per site + observable term) and its gradient wrt (f, v), summed over ranks."""
        out, hs = self.apply_padded(P, hidden=True)
        r = out - target
        n_cfg = out.shape[0]
        axes = tuple(range(1, out.ndim))
        sums = np.concatenate([[np.vdot(r, r)], np.sum(out * out, axis=axes), np.sum(target * target, axis=axes)])
        tot = np.empty_like(sums)
        comm.Allreduce(sums, tot, op=MPI.SUM)
        V = n_total / max(n_cfg, 1)          # sites per configuration (global)
        diff = (tot[1:1 + n_cfg] - tot[1 + n_cfg:]) / V
        loss = tot[0] / n_total + obs_weight * float(np.mean(diff ** 2)) if n_cfg else tot[0] / n_total
        G = 2.0 * r / n_total
        if obs_weight:
            shape = (n_cfg,) + (1,) * (out.ndim - 1)
            G = G + obs_weight * 2.0 * diff.reshape(shape) * 2.0 * out / V / n_cfg
        if self.activation == "linear":
            grad_f = self._conv_filter_gradient(P, G)[None]
            grad_v = np.zeros(self.filters)
        else:
            grad_f = np.stack([self._conv_filter_gradient(P, G * self.v[c] * (1 - np.tanh(hs[c]) ** 2))
                               for c in range(self.filters)])
            grad_v = np.array([np.vdot(G, np.tanh(hs[c])) for c in range(self.filters)])
        vec = np.concatenate([grad_f.ravel(), grad_v])
        tot = np.empty_like(vec)
        comm.Allreduce(vec, tot, op=MPI.SUM)
        return loss, tot[:grad_f.size].reshape(self.f.shape), tot[grad_f.size:]

    def _solve_normal_equations(self, P, target, comm):
        """Exact MSE minimum of the linear model: the taps feeding one sub-position j form one
        least-squares system A_j f_j = c_j (A_j = X_j X_j^T, X_j the inputs of those taps)."""
        g, b = self.ghost_width, self.b
        m = [n - 2 * g for n in P.shape[1:]]
        blocks = []
        for j, taps in self._by_subposition.items():
            X = np.stack([np.ascontiguousarray(P[(slice(None),) + tuple(slice(g - si, g - si + mi)
                                                                         for si, mi in zip(s, m))]).ravel()
                          for _, s in taps])
            y = np.ascontiguousarray(target[(slice(None),) + tuple(slice(ji, None, b) for ji in j)]).ravel()
            blocks.append((taps, X @ X.T, X @ y))
        vec = np.concatenate([np.concatenate([A.ravel(), c]) for _, A, c in blocks])
        tot = np.empty_like(vec)
        comm.Allreduce(vec, tot, op=MPI.SUM)
        pos = 0
        for taps, A, c in blocks:
            k = len(taps)
            A = tot[pos:pos + k * k].reshape(k, k)
            c = tot[pos + k * k:pos + k * k + k]
            pos += k * k + k
            sol = np.linalg.lstsq(A, c, rcond=None)[0]
            for (u, _), fu in zip(taps, sol):
                self.f[0][u] = fu

    def train(self, lattice, local_configs: np.ndarray, field: str = "real", epochs: int = 2000,
              lr: float = 0.01, obs_weight: float = 0.0, seed: int = 0, progress=None) -> dict:
        """Fit the filters so that T(R_b(phi)) ~ phi over the training configurations (collective).

        local_configs: (n, *local_shape) this rank's blocks on `lattice` (the fine lattice, size L).
        Returns {"loss": final MSE per site, "sigma": noise amplitude, "epochs": steps taken}.
        """
        check_blockable(lattice.shape, lattice.grid, self.b)
        target = np.asarray(local_configs, dtype=np.float64)
        coarse = block_ensemble(lattice, target, self.b, field, self.scale, seed)
        from qftml.rg.blocking import block_lattice

        P = halo_pad(block_lattice(lattice, self.b), coarse, self.ghost_width)
        comm = lattice.comm
        n_total = float(comm.allreduce(target.size, op=MPI.SUM))
        if self.activation == "linear" and obs_weight == 0.0:
            self._solve_normal_equations(P, target, comm)
            steps = 0
        else:
            steps = self._adam(P, target, comm, n_total, epochs, lr, obs_weight, progress)
        loss, _, _ = self.loss_and_gradient(P, target, comm, n_total, 0.0)
        # noise amplitude from the residual's component inside the kernel of the block average
        r = target - self.apply_padded(P)
        r_perp = r - _block_mean_broadcast(r, self.b)
        tot = comm.allreduce(float(np.vdot(r_perp, r_perp)), op=MPI.SUM)
        self.sigma = float(np.sqrt(tot / (n_total * (1.0 - self.b ** -self.ndim)))) if self.noise else 0.0
        self.history.append(float(loss))
        return {"loss": float(loss), "sigma": self.sigma, "epochs": steps}

    def _adam(self, P, target, comm, n_total, epochs, lr, obs_weight, progress):
        from qftml.learning.optimizers import Adam

        params = {"f": self.f, "v": self.v}
        adam = Adam(lr, beta1=0.9, beta2=0.999, eps=1e-12)
        for t in range(1, epochs + 1):
            loss, gf, gv = self.loss_and_gradient(P, target, comm, n_total, obs_weight)
            adam.step(params, {"f": gf, "v": gv})
            if self.activation == "linear":
                self.v[:] = 1.0
            self.history.append(float(loss))
            if progress is not None:
                progress(t, loss)
        return epochs

    # -- upscaling
    def upscale(self, lattice, local_configs: np.ndarray, seed: int = 0, first_config: int = 0, level: int = 0,
                fine=None):
        """One inverse-RG step of this rank's blocks (n, *local) on `lattice` (collective).

        Returns (fine lattice, (n, *(b * local)) fine blocks). Configuration i draws its noise with
        counter first_config + i and `level`, at global fine-site indices. `fine` (the lattice of
        fine_lattice(lattice, b), made once by a caller that upscales many times) saves creating it.
        """
        P = halo_pad(lattice, np.asarray(local_configs, dtype=np.float64), self.ghost_width)
        fine = fine_lattice(lattice, self.b) if fine is None else fine
        if fine.shape != tuple(self.b * n for n in lattice.shape) or fine.grid != lattice.grid:
            raise ValueError(f"fine lattice {fine} is not {lattice} refined by b = {self.b} on the same grid")
        out = self.apply_padded(P)
        if self.noise and self.sigma > 0:
            idx = global_index(fine.shape, fine.local_offset, fine.local_shape)
            for i in range(out.shape[0]):
                eta = upscaling_noise(seed, idx, first_config + i, level)
                out[i] += self.sigma * (eta - _block_mean_broadcast(eta[None], self.b)[0])
        return fine, out

    # -- HDF5
    def save(self, target) -> None:
        """Write the weights and settings into an HDF5 file path or an open h5py group."""
        if isinstance(target, (str, bytes)) or hasattr(target, "__fspath__"):
            with h5py.File(target, "w") as f:
                self.save(f)
            return
        target.create_dataset("filters", data=self.f)
        target.create_dataset("output_weights", data=self.v)
        target.create_dataset("loss_history", data=np.asarray(self.history, dtype=float))
        for k in ("b", "size", "filters", "ndim", "activation", "noise", "scale", "sigma"):
            target.attrs[k] = getattr(self, k)
        target.attrs["tap_offset"] = self.o
        if self.activation == "linear":
            target.attrs["gain"] = self.gain()

    @classmethod
    def load(cls, source) -> "InverseRG":
        """The model saved by save() (path or h5py group)."""
        if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
            with h5py.File(source, "r") as f:
                return cls.load(f)
        a = source.attrs
        act = a["activation"]
        act = act.decode() if isinstance(act, bytes) else str(act)
        model = cls(b=int(a["b"]), size=int(a["size"]), filters=int(a["filters"]), ndim=int(a["ndim"]),
                    activation=act, noise=bool(a["noise"]), scale=float(a["scale"]))
        model.f = np.array(source["filters"])
        model.v = np.array(source["output_weights"])
        model.sigma = float(a["sigma"])
        model.history = list(np.array(source["loss_history"]))
        return model


def _block_mean_broadcast(x: np.ndarray, b: int) -> np.ndarray:
    """Each site replaced by the mean of its b^d block (batch axis 0 kept)."""
    d = x.ndim - 1
    shape = [x.shape[0]]
    for n in x.shape[1:]:
        shape += [n // b, b]
    means = x.reshape(shape).mean(axis=tuple(range(2, 2 * d + 1, 2)), keepdims=True)
    return np.broadcast_to(means, shape).reshape(x.shape)
