"""Small collective patterns of the driver.

Exports:
    make_communicators(comm, replicas) -> Communicators(world, domain, cross, replica, replicas)
                                replica groups (independent chains) x domain groups (one lattice)
    on_root(comm, fn, errors)   fn() on rank 0 only, its result broadcast; an exception of a type in
                                `errors` raised there is raised again, same type and message, on every
                                rank (so all ranks agree on a verdict without all touching the file)
    TAGS                        {user: base tag} of the driver's point-to-point messages; a user owns
                                the tags base .. base + 15 (the engine's own tags: cpp/comms/tags.hpp)
"""
from __future__ import annotations

from dataclasses import dataclass

from mpi4py import MPI

TAGS = {
    "halo_pad": 7310,       # qftml.rg.inverse.halo_pad: base + 2 mu (to +mu), base + 2 mu + 1 (to -mu)
}


def on_root(comm, fn, errors):
    if comm is None or comm.size == 1:
        return fn()
    result = None
    if comm.rank == 0:
        try:
            result = ("ok", fn())
        except errors as e:
            result = ("error", (type(e), str(e)))
    status, payload = comm.bcast(result, root=0)
    if status == "error":
        kind, message = payload
        raise kind(message)
    return payload


@dataclass
class Communicators:
    world: MPI.Comm
    domain: MPI.Comm       # the ranks of this replica: one domain-decomposed lattice
    replica: int           # this rank's replica index
    replicas: int
    cross: MPI.Comm | None = None  # same lattice block in every replica (set once the lattice exists)

    def connect(self, lattice) -> None:
        """Create `cross` from the lattice's block ownership (Cartesian rank)."""
        if self.cross is None:
            self.cross = self.world.Split(color=lattice.rank, key=self.replica)


def make_communicators(comm: MPI.Comm, replicas: int = 1) -> Communicators:
    """Split `comm` into `replicas` consecutive groups of equal size (error if R does not divide it)."""
    if replicas < 1 or comm.size % replicas:
        raise ValueError(f"--replicas {replicas} must be >= 1 and divide the number of ranks ({comm.size})")
    per = comm.size // replicas
    replica = comm.rank // per
    domain = comm.Split(color=replica, key=comm.rank) if replicas > 1 else comm
    return Communicators(world=comm, domain=domain, replica=replica, replicas=replicas)
