"""Checkpoints of a Markov chain: written by hyperslabs, replaced atomically, read on any rank count.

Exports:
    CheckpointError                    (an EnsembleFileError) missing/corrupt checkpoint, physics mismatch
    checkpoint_path(output_path)       "<output>.ckpt" next to the ensemble file
    write_checkpoint(path, field, state, write_path=None)   collective; temp file, fsync, rename
    read_checkpoint(path, lattice) -> (local_field_block, state)   every rank reads its hyperslab
    read_checkpoint_state(path) -> state       attributes only
    physics_hash(physics) -> str       sha256 of the canonical JSON of the physics description
    physics_differences(old, new) -> list[str]   "key: checkpoint X, config Y" for every difference

A checkpoint holds the whole state of a counter-based chain (DESIGN 2): the field (/field, global
lexicographic order, each rank writes its block), and the attributes sweep_index, step, phase,
n_records, accepted/proposed-style counters, physics (JSON) and its hash. Because the random
numbers depend only on (seed, global site, sweep, hit), the chain continues bit for bit on any
number of ranks and any process grid.

Atomicity: the checkpoint is written to "<path>.tmp", closed, fsync'ed and renamed over <path>,
then the directory is fsync'ed; a crash at any moment leaves either the old or the new checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from qftml.io.ensembles import BlockFile, EnsembleFileError, _decode, _h5open, choose_write_path, fsync_path

CHECKPOINT_FORMAT = "qftml-checkpoint"


class CheckpointError(EnsembleFileError):
    """A checkpoint that cannot be used; the message is for the user."""


def checkpoint_path(output_path) -> str:
    return str(output_path) + ".ckpt"


def physics_hash(physics: dict) -> str:
    return hashlib.sha256(json.dumps(physics, sort_keys=True).encode()).hexdigest()


def physics_differences(old: dict, new: dict, prefix="") -> list:
    """Every key whose value differs between two (nested) physics descriptions."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += physics_differences(a, b, prefix + key + ".")
        elif a != b:
            out.append(f"{prefix}{key}: checkpoint {a!r}, config {b!r}")
    return out


def write_checkpoint(path, field, state: dict, write_path=None):
    """Collective. `state` holds JSON-able scalars/dicts (sweep_index, step, n_records, physics, ...)."""
    lattice = field.lattice
    comm = lattice.comm
    tmp = str(path) + ".tmp"
    bf = BlockFile(tmp, "w", lattice, write_path or choose_write_path(comm))
    try:
        bf.create("field", tuple(lattice.shape))
        bf.write_blocks("field", (), field.local)
        attrs = dict(state)
        attrs["physics_hash"] = physics_hash(state["physics"])
        bf.set_attrs(format=CHECKPOINT_FORMAT, **attrs)
    finally:
        bf.close()
    comm.Barrier()  # every block is in the closed temp file
    if comm.rank == 0:
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(os.path.dirname(os.path.abspath(path)))
    comm.Barrier()


def read_checkpoint_state(path) -> dict:
    """The checkpoint's attributes only (to compare physics before touching the field)."""
    return _read(path, None)[1]


def read_checkpoint(path, lattice):
    """(this rank's block of the checkpointed field, state dict). Raises CheckpointError with a
    clear message for a missing, truncated or foreign file."""
    return _read(path, lattice)


def _read(path, lattice):
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint {path}: nothing to resume (start a new chain without --resume; "
                              f"add --set output.overwrite=true if its ensemble file exists)")
    block = None
    try:
        with _h5open(path, "r") as f:
            if f.attrs.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(f"{path}: not a qftml checkpoint")
            state = {k: _decode(v) for k, v in f.attrs.items() if k != "format"}
            ds = f["field"]
            if lattice is not None:
                if ds.shape != tuple(lattice.shape):
                    raise CheckpointError(f"{path}: field of shape {ds.shape}, "
                                          f"but the lattice is {list(lattice.shape)}")
                block = np.asarray(ds[lattice.local_slices], dtype=float)
    except CheckpointError:
        raise
    except EnsembleFileError as e:
        raise CheckpointError(str(e)) from None
    except (KeyError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: damaged checkpoint (truncated or corrupt?): {e}") from None
    if physics_hash(state.get("physics", {})) != state.get("physics_hash"):
        raise CheckpointError(f"{path}: damaged checkpoint (physics hash does not match its description)")
    return block, state
