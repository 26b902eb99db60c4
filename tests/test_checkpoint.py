"""Checkpoints: hyperslab write, read back on another process grid / rank count, atomic replacement,
clean errors, physics comparison. Tests marked mpi run on every rank."""
import os

import h5py
import numpy as np
import pytest

import qftml
from qftml.io.checkpoints import (CheckpointError, checkpoint_path, physics_differences, read_checkpoint,
                              write_checkpoint)

PHYSICS = {"lattice": {"shape": [8, 8]}, "action": {"kappa": 0.3, "field": "real"}, "sampler": {"seed": 4}}


def shared_dir(comm, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt")) if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def _chain(comm, grid=None):
    lat = qftml.Lattice((8, 8), comm=comm, grid=grid)
    act = qftml.Action.homogeneous(lat, kappa=0.3, mu2=0.2, lam=0.5)
    return lat, act, qftml.Sampler(act, seed=4)


@pytest.mark.mpi
def test_resume_on_another_grid_and_rank_count_is_bitwise(comm, tmp_path_factory):
    """Checkpoint after 7 sweeps on this comm; continue 5 sweeps on a transposed grid and on one
    rank: the same configuration as 12 uninterrupted sweeps."""
    path = os.path.join(shared_dir(comm, tmp_path_factory), "c.ckpt")
    lat, act, s = _chain(comm)
    s.sweep(7)
    write_checkpoint(path, s.field, {"physics": PHYSICS, "sweep_index": s.sweep_index, "step": s.step,
                                     "n_records": 0})
    assert not os.path.exists(path + ".tmp")
    s.sweep(5)
    reference = s.field.gather(0)
    for sub, grid in ((comm, tuple(reversed(lat.grid))), (comm.Split(comm.rank, 0), None)):
        if sub is not comm and comm.rank != 0:
            sub.Free()
            continue
        lat2, act2, s2 = _chain(sub, grid)
        block, state = read_checkpoint(path, lat2)
        s2.field.local = block
        s2.field.exchange_halos()
        s2.sweep_index, s2.step = state["sweep_index"], state["step"]
        assert state["physics"] == PHYSICS and state["sweep_index"] == 7
        s2.sweep(5)
        resumed = s2.field.gather(0)
        if sub.rank == 0 and comm.rank == 0:
            assert np.array_equal(resumed, reference)
        if sub is not comm:
            sub.Free()
    comm.Barrier()


def test_replacement_is_atomic_and_stale_temp_files_are_ignored(comm, tmp_path):
    path = str(tmp_path / "run.h5.ckpt")
    assert path == checkpoint_path(str(tmp_path / "run.h5"))
    lat, act, s = _chain(comm)
    write_checkpoint(path, s.field, {"physics": PHYSICS, "sweep_index": 0, "step": 1.0, "n_records": 0})
    # a crash in the middle of the next write leaves a partial temp file: the checkpoint is intact
    with open(path + ".tmp", "wb") as f:
        f.write(b"\x89HDF\r\n partial")
    block, state = read_checkpoint(path, lat)
    assert state["sweep_index"] == 0 and np.array_equal(block, s.field.local)
    s.sweep(3)
    write_checkpoint(path, s.field, {"physics": PHYSICS, "sweep_index": 3, "step": s.step, "n_records": 2})
    block, state = read_checkpoint(path, lat)
    assert state["sweep_index"] == 3 and state["n_records"] == 2 and np.array_equal(block, s.field.local)
    assert not os.path.exists(path + ".tmp")


def test_damaged_checkpoints_give_clear_errors(comm, tmp_path):
    lat, act, s = _chain(comm)
    path = str(tmp_path / "c.ckpt")
    with pytest.raises(CheckpointError, match="nothing to resume"):
        read_checkpoint(path, lat)
    write_checkpoint(path, s.field, {"physics": PHYSICS, "sweep_index": 0, "step": 1.0, "n_records": 0})
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(path, lat)
    write_checkpoint(path, s.field, {"physics": PHYSICS, "sweep_index": 0, "step": 1.0, "n_records": 0})
    with h5py.File(path, "r+") as f:  # edited by hand: description no longer matches its hash
        f.attrs["physics"] = '{"lattice": {"shape": [8, 8]}}'
    with pytest.raises(CheckpointError, match="physics hash"):
        read_checkpoint(path, lat)
    other = qftml.Lattice((8, 4), comm=comm)
    write_checkpoint(path, s.field, {"physics": PHYSICS, "sweep_index": 0, "step": 1.0, "n_records": 0})
    with pytest.raises(CheckpointError, match=r"field of shape \(8, 8\), but the lattice is \[8, 4\]"):
        read_checkpoint(path, other)


def test_physics_differences_list_every_changed_key():
    new = {"lattice": {"shape": [8, 4]}, "action": {"kappa": 0.3, "field": "ising"}, "sampler": {"seed": 5}}
    diffs = physics_differences(PHYSICS, new)
    assert diffs == ["action.field: checkpoint 'real', config 'ising'",
                     "lattice.shape: checkpoint [8, 8], config [8, 4]",
                     "sampler.seed: checkpoint 4, config 5"]
    assert physics_differences(PHYSICS, PHYSICS) == []
