"""Checkpoints of Markov chains and trainers: hyperslabs, atomic replacement, read on any rank count.

Exports:
    CheckpointError                    (an EnsembleFileError) missing/corrupt checkpoint, physics mismatch
    checkpoint_path(output_path)       "<output>.ckpt" next to the output file
    write_checkpoint(path, field, state, write_path=None)   one chain; collective over the lattice
    read_checkpoint(path, lattice) -> (local_field_block, state)   every rank reads its hyperslab
    read_checkpoint_state(path) -> state       attributes only (either kind)
    write_trainer_checkpoint(path, comms, field, state, replica_state, arrays, write_path=None)
                                       a trainer (R replicas x domains); collective over comms.world
    read_trainer_checkpoint(path, comms, lattice) -> TrainerCheckpoint(field, state, replica_state, arrays)
    write_network_checkpoint(path, comm, state, arrays)   a phi^4 network trainer (small global arrays)
    read_network_checkpoint(path, comm=None) -> (state, arrays)   on every rank
    physics_hash(physics) -> str       sha256 of the canonical JSON of the physics description
    physics_differences(old, new) -> list[str]   "key: checkpoint X, config Y" for every difference
    check_state(path, state, counts=(), positive=(), finite=())   CheckpointError unless state[k] is an
                                       integer >= 0 (counts), a finite number > 0 (positive), finite (finite)

Chain checkpoint (`qftml sample`): /field (global lexicographic order, each rank writes its block)
and the attributes sweep_index, step, phase, n_records, counters, physics (JSON) and its hash.

Trainer checkpoint (`qftml learn`, later `fit`, `network`; attribute kind = "trainer"):
    /fields          (R, *shape)   every replica's chain: each rank writes its block at its replica
    /arrays/<name>   shape + trailing   per-site arrays shared by the replicas (couplings, optimiser
                                   moments), written by replica 0's ranks, hyperslab by hyperslab
    attributes       state (JSON-able: physics and its hash, counters, config ...), `replica_states`
                     (one JSON dict of counters per replica: sweeps, Metropolis step ...), `scalars`
                     (0-d entries of `arrays`, e.g. tied couplings, the optimiser's step count)
No rank ever holds the global lattice: blocks go to disk by BlockFile's mpio or rank0-blocks path.

Because the random numbers depend only on (seed, global site, sweep, hit), a chain continues bit for
bit on any number of ranks and any process grid. A trainer resumed on the same decomposition
continues bit for bit; on a different one, only the global sums (allreduce) round differently.

Atomicity: a checkpoint is written to "<path>.<host>-<pid>.tmp" (a name of this run alone: rank 0's
host and pid), closed, fsync'ed and renamed over <path>, then the directory is fsync'ed; a crash at
any moment leaves either the old or the new checkpoint.

Integrity: a field that is not finite (NaN, inf) is never written (the old checkpoint stays) and
never read back; every rank checks its own block and all ranks agree on the verdict.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from qftml.engine.sampler import RENAMED_ALGORITHMS
from qftml.io.ensembles import (BlockFile, EnsembleFileError, _collective, _decode, _encode, _h5open,
                                choose_write_path, fsync_path)

CHECKPOINT_FORMAT = "qftml-checkpoint"


class CheckpointError(EnsembleFileError):
    """A checkpoint that cannot be used; the message is for the user."""


def checkpoint_path(output_path) -> str:
    return str(output_path) + ".ckpt"


def physics_hash(physics: dict) -> str:
    return hashlib.sha256(json.dumps(physics, sort_keys=True).encode()).hexdigest()


def physics_differences(old: dict, new: dict, prefix="") -> list:
    """Every key whose value differs between two (nested) physics descriptions; an algorithm under
    its old name (a checkpoint of format 1: "heatbath") equals its new name."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if key == "algorithm" and isinstance(a, str):
            a = RENAMED_ALGORITHMS.get(a, a)
        if isinstance(a, dict) and isinstance(b, dict):
            out += physics_differences(a, b, prefix + key + ".")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, config {b!r}")
    return out


def check_state(path, state: dict, counts=(), positive=(), finite=()) -> None:
    """Refuse a checkpoint whose counters or numbers were edited or damaged (before anything is used)."""
    bad = []
    for key in counts:
        v = state.get(key)
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 0:
            bad.append(f"{key} = {v!r} (an integer >= 0)")
    for key, strict in [(k, True) for k in positive] + [(k, False) for k in finite]:
        v = state.get(key)
        ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
            and np.isfinite(v) and (v > 0 or not strict)
        if not ok:
            bad.append(f"{key} = {v!r} (a finite number{' > 0' if strict else ''})")
    if bad:
        raise CheckpointError(f"{path}: damaged or edited checkpoint: " + ", ".join(bad))


def _temp_name(path, comm):
    """The temporary file of this run (rank 0's host and pid), the same name on every rank."""
    from qftml.io.locking import unique_temp_name

    return comm.bcast(unique_temp_name(path) if comm.rank == 0 else None, root=0)


def _refuse_non_finite(path, local, comm, what="field"):
    """Collective: CheckpointError on every rank if any rank's block is not finite."""
    bad = int(not np.isfinite(local).all())
    if comm.allreduce(bad) if comm.size > 1 else bad:
        raise CheckpointError(f"{path}: the {what} holds non-finite values (NaN or inf) on "
                              f"{'some rank' if comm.size > 1 else 'this rank'}: not checkpointed "
                              f"(the previous checkpoint is kept); the chain diverged")


# ----------------------------------------------------------------------------- writing
def _replace_atomically(tmp, path, comm):
    """After every rank has closed `tmp`: fsync it, rename it over `path`, fsync the directory."""
    comm.Barrier()  # every block is in the closed temp file
    if comm.rank == 0:
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(os.path.dirname(os.path.abspath(path)))
    comm.Barrier()


def _attrs(state: dict, kind: str) -> dict:
    attrs = dict(state)
    attrs["physics_hash"] = physics_hash(state["physics"])
    attrs["format"], attrs["kind"] = CHECKPOINT_FORMAT, kind
    return attrs


def write_checkpoint(path, field, state: dict, write_path=None):
    """Collective. `state` holds JSON-able scalars/dicts (sweep_index, step, n_records, physics, ...)."""
    lattice = field.lattice
    local = field.local
    _refuse_non_finite(path, local, lattice.comm)
    tmp = _temp_name(path, lattice.comm)
    bf = BlockFile(tmp, "w", lattice, write_path or choose_write_path(lattice.comm))
    try:
        bf.create("field", tuple(lattice.shape))
        bf.write_blocks("field", (), local)
        bf.set_attrs(**_attrs(state, "chain"))
    finally:
        bf.close()
    _replace_atomically(tmp, path, lattice.comm)


class _ReplicaBlocks:
    """R replicas of one decomposed lattice seen as one (R, *shape) array over the world: the block
    of a rank is (its replica, its lattice block). Quacks like a Lattice for BlockFile."""

    def __init__(self, lattice, world, replica):
        self.comm, self.ndim = world, lattice.ndim + 1
        self.local_offset = (replica,) + tuple(lattice.local_offset)
        self.local_shape = (1,) + tuple(lattice.local_shape)
        self.local_slices = (slice(replica, replica + 1),) + tuple(lattice.local_slices)


def _plain(v):
    return v.item() if isinstance(v, np.generic) or (isinstance(v, np.ndarray) and v.ndim == 0) else v


def write_trainer_checkpoint(path, comms, field, state: dict, replica_state: dict, arrays: dict, write_path=None):
    """Collective over comms.world (a qftml.collective.Communicators; field on comms.domain).

    state: JSON-able, identical on every rank, with a `physics` entry (compared on resume).
    replica_state: JSON-able counters of this replica (identical on its ranks).
    arrays: {name: this rank's block (local_shape + trailing) or a 0-d value}, identical in every
    replica (only replica 0's are written)."""
    lattice = field.lattice
    world = comms.world
    local = field.local
    _refuse_non_finite(path, local, world)
    tmp = _temp_name(path, world)
    per_replica = world.allgather((comms.replica, {k: _plain(v) for k, v in replica_state.items()}))
    replicas = [s for _, s in sorted(per_replica, key=lambda x: x[0])[::lattice.comm.size]]
    blocks = {k: np.asarray(v, dtype=float) for k, v in arrays.items() if np.ndim(v) >= lattice.ndim}
    scalars = {k: _plain(np.asarray(v)) for k, v in arrays.items() if np.ndim(v) == 0}
    if len(blocks) + len(scalars) != len(arrays):
        bad = sorted(set(arrays) - set(blocks) - set(scalars))
        raise ValueError(f"checkpoint arrays {bad}: neither a lattice block nor a scalar")
    stacked = _ReplicaBlocks(lattice, world, comms.replica)
    bf = BlockFile(tmp, "w", stacked, write_path or choose_write_path(world))
    try:
        bf.create("fields", (comms.replicas,) + tuple(lattice.shape))
        bf.write_blocks("fields", (), local[None])
        bf.set_attrs(replica_states=replicas, scalars=scalars, **_attrs(state, "trainer"))
    finally:
        bf.close()
    world.Barrier()
    if comms.replica == 0:  # the shared arrays: replica 0's ranks, block by block
        bf = BlockFile(tmp, "a", lattice, write_path or choose_write_path(lattice.comm))
        try:
            for name, local in blocks.items():
                bf.create(f"arrays/{name}", tuple(lattice.shape) + local.shape[lattice.ndim:])
                bf.write_blocks(f"arrays/{name}", (), local)
        finally:
            bf.close()
    _replace_atomically(tmp, path, world)


# ----------------------------------------------------------------------------- reading
@contextlib.contextmanager
def _open_checkpoint(path, kind):
    """(h5py file, state) of a checkpoint of `kind`; every failure becomes a CheckpointError."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint {path}: nothing to resume (start a new chain without --resume; "
                              f"add --set output.overwrite=true if its ensemble file exists)")
    try:
        with _h5open(path, "r") as f:
            if f.attrs.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path}: not a qftml checkpoint")
            have = _decode(f.attrs.get("kind", "chain"))
            if kind is not None and have != kind:
                raise CheckpointError(f"{path}: a checkpoint of a {have}, not of a {kind}")
            state = {k: _decode(v) for k, v in f.attrs.items() if k not in ("format", "kind")}
            if physics_hash(state.get("physics", {})) != state.get("physics_hash"):
                raise CheckpointError(f"{path}: damaged checkpoint (physics hash does not match its description)")
            yield f, state
    except CheckpointError:
        raise
    except EnsembleFileError as e:
        raise CheckpointError(str(e)) from None
    except (KeyError, OSError, RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint (truncated or corrupt?): {e}") from None


def _check_shape(path, ds, want, what):
    if ds.shape != tuple(want):
        raise CheckpointError(f"{path}: {what} of shape {ds.shape}, but the lattice is {list(want)}")


def read_checkpoint_state(path) -> dict:
    """The checkpoint's attributes only (to compare physics before touching the field)."""
    with _open_checkpoint(path, None) as (_, state):
        return state


def _finite_block(path, block, what):
    if not np.isfinite(block).all():
        raise CheckpointError(f"{path}: {what} holds non-finite values (NaN or inf): damaged or edited "
                              f"checkpoint, not resumed from")
    return block


def read_checkpoint(path, lattice):
    """(this rank's block of the checkpointed field, state dict). Collective over lattice.comm:
    raises the same CheckpointError on every rank, with a clear message, for a missing, truncated,
    foreign or non-finite checkpoint."""
    def read():
        with _open_checkpoint(path, "chain") as (f, state):
            ds = f["field"]
            _check_shape(path, ds, lattice.shape, "field")
            return _finite_block(path, np.asarray(ds[lattice.local_slices], dtype=float), "/field"), state

    return _collective(lattice.comm, read, CheckpointError)


@dataclass
class TrainerCheckpoint:
    field: np.ndarray       # this rank's block of its replica's field
    state: dict             # the shared state (physics, counters, config, ...)
    replica_state: dict     # this replica's counters
    arrays: dict            # name -> this rank's block, or a 0-d array


def read_trainer_checkpoint(path, comms, lattice) -> TrainerCheckpoint:
    """Every rank reads its hyperslabs; the process grid and the ranks per replica may differ from
    the run that wrote it, the number of replicas may not. Collective over comms.world: a missing,
    truncated, foreign or non-finite checkpoint raises the same CheckpointError on every rank."""
    return _collective(comms.world, lambda: _read_trainer(path, comms, lattice), CheckpointError)


def _read_trainer(path, comms, lattice) -> TrainerCheckpoint:
    with _open_checkpoint(path, "trainer") as (f, state):
        fields = f["fields"]
        if fields.shape[0] != comms.replicas:
            raise CheckpointError(f"{path}: the checkpoint has {fields.shape[0]} replicas, not {comms.replicas}")
        _check_shape(path, fields, (comms.replicas,) + tuple(lattice.shape), "fields")
        field = _finite_block(path, np.asarray(fields[(comms.replica,) + tuple(lattice.local_slices)],
                                               dtype=float), "/fields")
        arrays = {k: np.array(v, dtype=float) if isinstance(v, float) else np.array(v)
                  for k, v in state.pop("scalars", {}).items()}
        if "arrays" in f:
            names = []
            f["arrays"].visit(lambda n: names.append(n) if hasattr(f["arrays"][n], "shape") else None)
            for name in names:
                ds = f[f"arrays/{name}"]
                _check_shape(path, ds, tuple(lattice.shape) + ds.shape[lattice.ndim:], f"/arrays/{name}")
                arrays[name] = _finite_block(path, np.asarray(ds[tuple(lattice.local_slices)], dtype=float),
                                             f"/arrays/{name}")
        for name, v in arrays.items():
            _finite_block(path, np.asarray(v, dtype=float), f"/arrays/{name}")
        replicas = state.pop("replica_states", None)
        if not isinstance(replicas, list) or len(replicas) != comms.replicas \
                or not all(isinstance(r, dict) for r in replicas):
            raise CheckpointError(f"{path}: damaged checkpoint (attribute replica_states is not one dict per replica)")
        replica_state = replicas[comms.replica]
        return TrainerCheckpoint(field=field, state=state, replica_state=replica_state, arrays=arrays)


# ----------------------------------------------------------------------------- networks
def write_network_checkpoint(path, comm, state: dict, arrays: dict) -> None:
    """Collective. A phi^4 network trainer (kind "network"): `arrays` are global (the same on every
    rank: weights, optimiser moments, all chains gathered), small; rank 0 writes /arrays/<name>
    and the attributes (state with its `physics`), atomically like every checkpoint."""
    tmp = str(path) + ".tmp"
    if comm is None or comm.rank == 0:
        with _h5open(tmp, "w") as f:
            scalars = {}
            for name, v in arrays.items():
                if np.ndim(v) == 0:
                    scalars[name] = _plain(np.asarray(v))
                else:
                    f.create_dataset(f"arrays/{name}", data=np.asarray(v))
            attrs = _attrs(state, "network")
            attrs["scalars"] = scalars
            for k, v in attrs.items():
                f.attrs[k] = _encode(v)
    if comm is None:
        fsync_path(tmp)
        os.replace(tmp, path)
        return
    _replace_atomically(tmp, path, comm)


def read_network_checkpoint(path, comm=None):
    """(state, {name: array}) of a network checkpoint on every rank (rank 0 reads, broadcasts);
    CheckpointError with a clear message otherwise."""
    from qftml.collective import on_root

    def read():
        with _open_checkpoint(path, "network") as (f, state):
            scalars = state.pop("scalars", {})
            arrays = {k: np.asarray(v) for k, v in scalars.items()}
            if "arrays" in f:
                names = []
                f["arrays"].visit(lambda n: names.append(n) if hasattr(f["arrays"][n], "shape") else None)
                arrays.update({n: np.asarray(f[f"arrays/{n}"]) for n in names})
            return state, arrays

    return on_root(comm, read, CheckpointError)
