"""Sufficient statistics of data for `qftml fit` (DESIGN 1.5), from the engine's density kernels.

For the model S(phi; theta) = sum_i theta_i D_i(phi) the log-likelihood of data is
    L(theta) = -<S>_data - ln Z(theta),   dL/dtheta_i = -<D_i>_data + <D_i>_p,
so the data enter only through the means <D_i>_data of the gradient densities (DESIGN 1.1:
-phi_x phi_{x+mu}, -phi_x phi_{x+e}, phi^2, phi^4, phi), per site (untied families) or summed over
the lattice (tied families), and through S per configuration for the value of L. Every loop over
sites is the engine's (Action.gradient_densities on a Field set from the data block; the setter
refreshes the ghosts, so each rank needs only its block); Python loops over configurations only.

Shards: each rank holds (n_local, *local_shape) of its replica's rows (qftml.io.datasets). Sums over
a replica's rows are made global over replicas with one allreduce on comms.cross (per-site arrays
of the rank's block) and one on comms.world for the counts; tied sums and the homogeneous moments
with one allreduce on the domain per chunk of configurations.

Exports:
    MOMENT_NAMES(ndim, n_extra)       the homogeneous moments: link_<l> (per link type, <phi_x phi_{x+e_l}>),
                                      phi2, phi4, phi (per-site averages)
    DataMoments                       means {family: block or 0-d (tied: global sum)}, n, moments
                                      (per-site averages), moments_err (Gamma method over rows),
                                      mean_phi (per-site <phi>, local block), seconds, comm_seconds
    data_moments(model, shard, rows, comms, select=None) -> DataMoments
    action_values(action, shard, comms) -> (n_local,) global S of every row of the shard
    moments_of_measure(m, volume) -> the homogeneous moments of one qftml.measure() record
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from qftml.engine.lattice import Field


def MOMENT_NAMES(ndim: int, n_extra: int = 0) -> list:
    return [f"link_{i}" for i in range(ndim + n_extra)] + ["phi2", "phi4", "phi"]


def moments_of_measure(m: dict, volume: int) -> np.ndarray:
    """[link sums per link type, sum phi^2, sum phi^4, M] / V of one qftml.measure record."""
    return np.concatenate([np.asarray(m["link_sums"], dtype=float),
                           [m["sum_phi2"], m["sum_phi4"], m["M"]]]) / volume


@dataclass
class DataMoments:
    means: dict            # family -> <dS/dtheta>_data: local block (untied) or 0-d global sum (tied)
    n: int                 # configurations (all replicas)
    moments: np.ndarray    # per-site averages of MOMENT_NAMES
    moments_err: np.ndarray
    mean_phi: np.ndarray   # <phi_x>_data on this rank's block
    seconds: float = 0.0
    comm_seconds: float = 0.0


def _local_moments(dens, offsets_n):
    """Local sums: link l (phi phi, i.e. minus the w/g densities), phi^2, phi^4, phi."""
    links = [-dens["w"][..., mu].sum() for mu in range(dens["w"].shape[-1])]
    if "g" in dens and dens["g"].size:
        links += [-dens["g"][..., k].sum() for k in range(dens["g"].shape[-1])]
    return links + [dens["a"].sum(), dens["b"].sum(), dens["r"].sum()]


def data_moments(model, shard, rows, comms, select=None, chunk: int = 256) -> DataMoments:
    """<dS/dtheta>_data of the model's learned families over the rows of every replica's shard
    (`select`: a boolean mask of the shard's rows, e.g. a mini-batch). Collective over comms.world."""
    from qftml.stats.errors import mean_error

    t0 = time.perf_counter()
    t_comm = 0.0
    lat = model.lattice
    action = model.action()             # only its link offsets matter for the densities
    field = Field(lat)
    sums = {fam: np.zeros(model.shape(fam)) for fam in model.learn}
    sum_phi = np.zeros(lat.local_shape)
    use = np.arange(len(shard)) if select is None else np.nonzero(select)[0]
    n_mom = lat.ndim + len(model.extra_offsets) + 3
    local_m = np.empty((len(use), n_mom))
    for j, i in enumerate(use):
        field.local = shard[i]
        dens = action.gradient_densities(field)
        for fam in model.learn:
            sums[fam] += dens[fam]
        sum_phi += shard[i]
        local_m[j] = _local_moments(dens, n_mom)
    t1 = time.perf_counter()
    lat.comm.Allreduce(MPI.IN_PLACE, local_m)          # global sums per configuration
    count = comms.world.allreduce(len(use) if lat.comm.rank == 0 else 0)
    packed = np.concatenate([sums[f].ravel() for f in model.learn] + [sum_phi.ravel()])
    if comms.replicas > 1:
        comms.cross.Allreduce(MPI.IN_PLACE, packed)
    # every replica's moments in the order of their global rows (one series for the Gamma method)
    parts = comms.cross.allgather((np.asarray(rows)[use], local_m)) if comms.replicas > 1 else [(rows[use], local_m)]
    t_comm += time.perf_counter() - t1
    if count == 0:
        raise ValueError("no data configurations selected (mini-batch empty)")
    order = np.concatenate([p[0] for p in parts])
    series = np.concatenate([p[1] for p in parts])[np.argsort(order, kind="stable")] / lat.volume
    means, off = {}, 0
    for fam in model.learn:
        size = sums[fam].size
        block = packed[off:off + size].reshape(sums[fam].shape) / count
        off += size
        means[fam] = block
    t2 = time.perf_counter()
    tied = [fam for fam in model.learn if fam in model.tied]   # a fixed order on every rank (tied is a set)
    if tied:
        v = np.array([means[fam].sum() for fam in tied])
        lat.comm.Allreduce(MPI.IN_PLACE, v)
        for fam, value in zip(tied, v):
            means[fam] = np.array(value)
    t_comm += time.perf_counter() - t2
    mean_phi = packed[off:].reshape(lat.local_shape) / count
    mom = series.mean(axis=0)
    err = np.array([mean_error(series[:, k], f"data_moment{k}")[1] if len(series) > 1 else np.nan
                    for k in range(n_mom)])
    return DataMoments(means=means, n=int(count), moments=mom, moments_err=err, mean_phi=mean_phi,
                       seconds=time.perf_counter() - t0 - t_comm, comm_seconds=t_comm)


def action_values(action, shard, comms) -> np.ndarray:
    """S(phi) of every row of this rank's shard (global values: one allreduce over the domain)."""
    lat = action.lattice
    field = Field(lat)
    c = {k: np.asarray(v) for k, v in action.couplings().items()}
    out = np.empty(len(shard))
    for i in range(len(shard)):
        field.local = shard[i]
        dens = action.gradient_densities(field)
        out[i] = sum(float(np.vdot(c[f], dens[f])) for f in dens if f in c and dens[f].size)
    lat.comm.Allreduce(MPI.IN_PLACE, out)
    return out


__all__ = ["MOMENT_NAMES", "DataMoments", "data_moments", "action_values", "moments_of_measure"]
