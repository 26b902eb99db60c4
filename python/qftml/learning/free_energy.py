"""Free energies F_S = -ln Z_S by thermodynamic integration from an exactly solvable Gaussian.

Path: S_t = S_0 + t (S_1 - S_0), t in [0, 1], with S_0 a homogeneous Gaussian reference
(couplings w0 on nearest-neighbour links, a0 on sites, b = r = g = 0) and S_1 the action of interest.
The couplings are linear in t (theta_t = (1 - t) theta_0 + t theta_1), so every S_t is a member of
the same family and normalisable: b_t = t b_1 > 0 for t > 0, and for a Gaussian S_1 the diagonal
dominance of S_0 and S_1 carries over to their convex combination. Then

    d ln Z_t / dt = -<S_1 - S_0>_t    =>    F_S = F_0 + int_0^1 <S_1 - S_0>_t dt,

F_0 = -ln Z_0 exact (qftml.exact.gaussian_log_z: -(V/2) ln 2 pi + (1/2) sum_k ln K_0(k)).
The integral uses Gauss-Legendre nodes; each node is an independent Markov chain whose mean of
S_1 - S_0 has an autocorrelation-aware error (pyerrors Gamma method); the nodes' errors add in
quadrature with the quadrature weights. The quadrature error is not included: check it by
changing `nodes` (docs/learning.md does). With replicas the nodes are shared out round-robin.
Node i of estimate `stream` runs on qftml.engine.rng.derive_seed(seed, "ti_node", stream, i): the
caller numbers its estimates (`learn`: the epoch for F_S, TARGET_STREAM for F_A), so no two nodes
of any two estimates share a chain.

Exports:
    TARGET_STREAM                     the stream id of a target's F_A (2^63: never an epoch)
    gauss_legendre(n) -> (t, weights) on [0, 1]
    default_reference(couplings, lattice) -> {"w": w0, "a": a0}
    free_energy_ti(lattice, couplings, ...) -> FreeEnergyResult(value, error, reference_value, t,
                                                               weights, integrand, integrand_error)
    variational_bound(a_minus_s, a_minus_s_err, f_s) -> (F, dF)   F = <A - S>_p + F_S
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from qftml import exact
from qftml.engine.action import FAMILIES, Action
from qftml.engine.rng import derive_seed
from qftml.engine.sampler import Sampler
from qftml.stats.errors import mean_error

TARGET_STREAM = 2 ** 63


def gauss_legendre(n: int):
    """Gauss-Legendre nodes and weights mapped to [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(int(n))
    return 0.5 * (x + 1.0), 0.5 * w


@dataclass
class FreeEnergyResult:
    value: float             # F_S = -ln Z_S
    error: float             # statistical (Gamma method), quadrature error not included
    reference_value: float   # F_0 of the Gaussian reference (exact)
    reference: dict
    t: np.ndarray
    weights: np.ndarray
    integrand: np.ndarray    # <S_1 - S_0>_t at the nodes
    integrand_error: np.ndarray


def _global_mean(lattice, local):
    comm = lattice.comm
    s = np.array([float(np.sum(local)), float(np.size(local))])
    comm.Allreduce(MPI.IN_PLACE, s)
    return s[0] / s[1]


def default_reference(couplings: dict, lattice) -> dict:
    """Ultralocal Gaussian reference: w0 = 0, a0 = max(mean a of S, 0.5) (a0 > 0 is required)."""
    return {"w": 0.0, "a": max(_global_mean(lattice, couplings["a"]), 0.5)}


def free_energy_ti(lattice, couplings: dict, extra_offsets=(), field: str = "real", reference: dict | None = None,
                   nodes: int = 8, samples: int = 200, thermalize: int = 200, sweeps_between: int = 1,
                   seed: int = 0, algorithm: str = "metropolis", hits: int = 1, comms=None,
                   stream: int = 0, cluster: str = "none", cluster_every: int = 1) -> FreeEnergyResult:
    """F_S of the action with local `couplings` (dict of local blocks or scalars) by thermodynamic integration.

    comms: qftml.collective.Communicators (replicas share the nodes; collective over comms.world),
    or None for a single chain per node on lattice.comm. stream: which estimate this is (see above).
    """
    if field != "real":
        raise ValueError("free energies by thermodynamic integration need a real field (Gaussian reference)")
    extra_offsets = [list(map(int, e)) for e in extra_offsets]
    full = {f: couplings.get(f, 0.0) for f in FAMILIES}
    if not extra_offsets:
        full.pop("g")
    ref = dict(default_reference(full, lattice) if reference is None else reference)
    w0, a0 = float(ref["w"]), float(ref["a"])
    if not a0 > lattice.ndim * abs(w0):
        raise ValueError(f"Gaussian reference w0={w0}, a0={a0} is not diagonally dominant (need a0 > d |w0|)")
    theta0 = {f: 0.0 for f in full}
    theta0["w"], theta0["a"] = w0, a0
    f0 = -float(exact.gaussian_log_z(lattice.shape, w0, a0))
    t_nodes, weights = gauss_legendre(nodes)
    replica, replicas = (0, 1) if comms is None else (comms.replica, comms.replicas)
    if comms is not None:
        comms.connect(lattice)
    mean = np.zeros(nodes)
    err = np.zeros(nodes)
    # the local parts of S_1 - S_0 come from the densities: S is linear in its couplings
    delta = {f: np.asarray(full[f], dtype=float) - theta0[f] for f in full}
    for i, t in enumerate(t_nodes):
        if i % replicas != replica:
            continue
        c = {f: (1 - t) * np.asarray(theta0[f], dtype=float) + t * np.asarray(full[f], dtype=float) for f in full}
        act = Action(lattice, c["w"], c["a"], c["b"], c["r"], g=c.get("g"), extra_offsets=extra_offsets, field=field)
        sampler = Sampler(act, seed=derive_seed(seed, "ti_node", stream, i), algorithm=algorithm, hits=hits,
                          start="hot", cluster=cluster, cluster_every=cluster_every)
        sampler.thermalize(thermalize)
        local = np.empty(samples)
        for n in range(samples):
            sampler.sweep(sweeps_between)
            dens = act.gradient_densities(sampler.field)
            local[n] = sum(float(np.sum(delta[f] * dens[f])) for f in full if dens[f].size)
        lattice.comm.Allreduce(MPI.IN_PLACE, local)
        mean[i], err[i] = mean_error(local, f"ti_node{i}")
    if comms is not None and replicas > 1:
        comms.cross.Allreduce(MPI.IN_PLACE, mean)
        comms.cross.Allreduce(MPI.IN_PLACE, err)
    value = f0 + float(weights @ mean)
    error = float(np.sqrt(np.sum((weights * err) ** 2)))
    return FreeEnergyResult(value=value, error=error, reference_value=f0, reference={"w": w0, "a": a0},
                            t=t_nodes, weights=weights, integrand=mean, integrand_error=err)


def variational_bound(a_minus_s: float, a_minus_s_err: float, f_s: FreeEnergyResult):
    """F = <A - S>_p + F_S with the errors added in quadrature (independent chains)."""
    return a_minus_s + f_s.value, float(np.hypot(a_minus_s_err, f_s.error))
