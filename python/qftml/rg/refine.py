"""Refinement of upscaled configurations: the fine theory's conditional given the block field (docs/irg.md).

Inverse Monte Carlo RG (Ron, Swendsen and Brandt, PRL 89, 275701): after an inverse step phi = T(Phi),
Markov moves on the fine lattice that keep every block sum of phi fixed sample

    p(phi | R_b(phi) = R_b(T(Phi))) ~ exp(-S(phi))      on the constraint surface,

so the long-wavelength content of the upscaling (every block average, the magnetisation among them)
is kept exactly and the short-distance structure becomes that of the phi^4 theory at b L. The moves
are pair moves phi_x += d, phi_y -= d inside one block, Metropolis on the full homogeneous action,
blocks checkerboarded by the parity of their global block coordinates (one halo refresh per colour),
C++ kernel cpp/kernels/block_constrained.hpp. Random numbers: the engine's Philox under
derive_seed(seed, "irg_refine", config, level) at counter (global site, sweep): the same bits on any
process grid.

Optionally `relax` unconstrained sweeps follow (the engine's Sampler, local Metropolis + cluster
update on the same stream family, derive_seed(seed, "irg_relax", config, level)); they let the
block averages, and so the magnetisation, relax towards the b L theory (docs/irg.md: the
bias-versus-sweeps curve).

Exports:
    check_refinable(shape, grid, b)    ValueError unless the colouring is valid (even number of blocks
                                       per direction, or one) and blocks do not cross ranks
    block_couplings(ndim, kappa, mu2, lam, h) -> (kappa, a, b4, r)   of DESIGN 1.1
    constrained_sweeps(lattice, local, b, couplings, sweeps, seed, step=1.0, first_sweep=0)
        -> (refined local block, acceptance)     collective; `local` is one configuration's block
    Refiner(lattice, b, kappa, mu2, lam, h, constrained, relax, step, hits, cluster, cluster_every, seed,
            relax_step)
        .refine(local, config, level) -> local   constrained then unconstrained sweeps of one configuration
        .acceptance                             mean acceptance of the constrained moves so far
"""
from __future__ import annotations

import numpy as np

from qftml.engine import rng
from qftml.rg.inverse import halo_pad


def check_refinable(shape, grid, b: int) -> None:
    for mu, (L, g) in enumerate(zip(shape, grid)):
        if L % g or (L // g) % b:
            raise ValueError(f"block-constrained refinement: direction {mu} has local extent {L / g:g}, "
                             f"not a multiple of b = {b} (blocks may not cross ranks)")
        nb = L // b
        if nb != 1 and nb % 2:
            raise ValueError(f"block-constrained refinement: direction {mu} has {nb} blocks of b = {b}; the "
                             f"checkerboard over blocks needs an even number (or one)")


def block_couplings(ndim, kappa, mu2, lam, h=0.0):
    """(link coupling, a, b, r) of the homogeneous action: a = (mu2 + 2 d kappa) / 2, b = lam / 4, r = -h."""
    return float(kappa), (float(mu2) + 2.0 * ndim * float(kappa)) / 2.0, float(lam) / 4.0, -float(h)


def constrained_sweeps(lattice, local, b, couplings, sweeps, seed, step=1.0, first_sweep=0):
    """`sweeps` block-constrained sweeps of one configuration's block (collective over lattice.comm).

    couplings = (kappa, a, b4, r). Sweep n uses counter sweep = first_sweep + n; colour 0 then colour 1,
    ghosts refreshed before each colour. Returns (refined block, acceptance over all ranks)."""
    from mpi4py import MPI

    from qftml import _core

    check_refinable(lattice.shape, lattice.grid, b)
    kappa, a, b4, r = couplings
    x = np.array(local, dtype=np.float64)
    inner = tuple(slice(1, -1) for _ in range(x.ndim))
    offset, shape = [int(o) for o in lattice.local_offset], [int(n) for n in lattice.shape]
    code = rng.purpose("irg_refine")
    acc = 0
    whole = all(g == 1 for g in lattice.grid)   # every direction local: the kernel wraps, no ghost is read
    if whole:
        P = np.zeros(tuple(n + 2 for n in x.shape))
        P[inner] = x
    for n in range(int(sweeps)):
        for colour in (0, 1):
            if not whole:
                P = np.ascontiguousarray(halo_pad(lattice, x[None], 1)[0])
            acc += _core.block_constrained_sweep(P, offset, shape, int(b), kappa, a, b4, r, int(seed), code,
                                                 int(first_sweep + n), colour, float(step))
            if not whole:
                x = P[inner].copy()
    if whole:
        x = P[inner].copy()
    total = lattice.comm.allreduce(acc, op=MPI.SUM)
    return x, total / max(1, int(sweeps) * lattice.volume)


class Refiner:
    """Constrained (and optionally unconstrained) refinement of upscaled configurations on one fine lattice."""

    def __init__(self, lattice, b=2, kappa=1.0, mu2=-0.9515, lam=0.7, h=0.0, constrained=20, relax=0, step=1.0,
                 hits=2, cluster="swendsen-wang", cluster_every=2, seed=0, relax_step=1.0):
        check_refinable(lattice.shape, lattice.grid, b)
        self.lattice, self.b = lattice, int(b)
        self.couplings = block_couplings(lattice.ndim, kappa, mu2, lam, h)
        self.homog = dict(kappa=kappa, mu2=mu2, lam=lam, h=h)
        self.constrained, self.relax, self.step = int(constrained), int(relax), float(step)
        self.relax_step = float(relax_step)
        self.hits, self.cluster, self.cluster_every = int(hits), cluster, int(cluster_every)
        self.seed = int(seed)
        self._acc, self._n = 0.0, 0
        self._action = None

    @property
    def acceptance(self) -> float:
        return self._acc / self._n if self._n else float("nan")

    def refine(self, local, config: int, level: int) -> np.ndarray:
        """Refined block of one configuration (collective); streams keyed by (config, level)."""
        x = np.asarray(local, dtype=np.float64)
        if self.constrained:
            x, acc = constrained_sweeps(self.lattice, x, self.b, self.couplings, self.constrained,
                                        rng.derive_seed(self.seed, "irg_refine", int(config), int(level)),
                                        self.step)
            self._acc += acc
            self._n += 1
        if self.relax:
            x = self.relax_sweeps(x, self.relax, config, level)
        return x

    def relax_sweeps(self, local, sweeps, config, level, first_sweep=0):
        """Unconstrained sweeps (local Metropolis + cluster update) of the engine's Sampler from `local`."""
        import qftml

        if self._action is None:
            self._action = qftml.Action.homogeneous(self.lattice, **self.homog)
        field = qftml.Field(self.lattice)
        field.local = local
        s = qftml.Sampler(self._action, seed=rng.derive_seed(self.seed, "irg_relax", int(config), int(level)),
                          hits=self.hits, step=self.relax_step, start="keep", field=field, cluster=self.cluster,
                          cluster_every=self.cluster_every)
        s.sweep_index = int(first_sweep)
        s.sweep(int(sweeps))
        return field.local
