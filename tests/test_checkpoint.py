"""Checkpoints: hyperslab write, read back on another process grid / rank count, atomic replacement,
clean errors, physics comparison; chains (`sample`) and trainers (replicas x domains, `learn`).
Tests marked mpi run on every rank."""
import glob
import os

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import qftml
from qftml.collective import make_communicators
from qftml.io.checkpoints import (CheckpointError, checkpoint_path, physics_differences, read_checkpoint,
                                  read_checkpoint_state, read_trainer_checkpoint, write_checkpoint,
                                  write_trainer_checkpoint)
from qftml.learning.model import global_site_index

# both write paths; "mpio" (collective MPI-IO) needs h5py with MPI (marker mpio, tests/conftest.py)
WRITE_PATHS = pytest.mark.parametrize("write_path", ["rank0-blocks", pytest.param("mpio", marks=pytest.mark.mpio)])
PHYSICS = {"lattice": {"shape": [8, 8]}, "action": {"kappa": 0.3, "field": "real"}, "sampler": {"seed": 4}}


def shared_dir(comm, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt")) if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def _chain(comm, grid=None):
    lat = qftml.Lattice((8, 8), comm=comm, grid=grid)
    act = qftml.Action.homogeneous(lat, kappa=0.3, mu2=0.2, lam=0.5)
    return lat, act, qftml.Sampler(act, seed=4)


@WRITE_PATHS
@pytest.mark.mpi
def test_resume_on_another_grid_and_rank_count_is_bitwise(comm, tmp_path_factory, write_path):
    """Checkpoint after 7 sweeps on this comm; continue 5 sweeps on a transposed grid and on one
    rank: the same configuration as 12 uninterrupted sweeps."""
    path = os.path.join(shared_dir(comm, tmp_path_factory), "c.ckpt")
    lat, act, s = _chain(comm)
    s.sweep(7)
    write_checkpoint(path, s.field, {"physics": PHYSICS, "sweep_index": s.sweep_index, "step": s.step,
                                     "n_records": 0}, write_path=write_path)
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
    # temporaries have names of their own run (<path>.<host>-<pid>.tmp): a writer leaves another
    # run's alone (`qftml sample` removes dead runs' under its writer lock) and leaves none of its own
    with open(path + ".tmp", "rb") as f:
        assert f.read() == b"\x89HDF\r\n partial"
    assert glob.glob(glob.escape(path) + "*.tmp") == [path + ".tmp"]


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


# ------------------------------------------------------------------------------ trainer checkpoints
def _trainer_contents(comms, lat):
    """A field, per-site arrays and scalars that encode where they belong (global index, replica)."""
    x = global_site_index(lat).astype(float)
    field = qftml.Field(lat)
    field.local = x + 1000.0 * comms.replica + 0.1
    arrays = {"couplings/w": np.stack([x / 7, -x / 3], axis=-1), "optimizer/m/a": x ** 2 / 11,
              "couplings/b": np.array(0.1 + 1e-17 * 3), "optimizer/t": np.asarray(7)}
    state = {"physics": PHYSICS, "epoch": 3, "shift": 1 / 3}
    return field, state, {"sweeps": 100 + comms.replica, "step": 0.5 / (1 + comms.replica)}, arrays


def _check_read(ck, comms, lat):
    field, state, replica_state, arrays = _trainer_contents(comms, lat)
    assert np.array_equal(ck.field, field.local)
    assert ck.replica_state == replica_state
    assert ck.state["epoch"] == 3 and ck.state["shift"] == 1 / 3 and ck.state["physics"] == PHYSICS
    assert set(ck.arrays) == set(arrays)
    for k, v in arrays.items():
        assert np.array_equal(ck.arrays[k], v), k       # bit for bit, scalars too
    assert int(ck.arrays["optimizer/t"]) == 7


@WRITE_PATHS
@pytest.mark.mpi
def test_trainer_checkpoint_round_trip_and_fewer_ranks_per_replica(comm, tmp_path_factory, write_path):
    """R replicas x domains write their blocks; the same ranks, and R ranks with one rank per
    replica (world size >= 2), read back exactly what each replica wrote."""
    path = os.path.join(shared_dir(comm, tmp_path_factory), "t.ckpt")
    replicas = max(1, comm.size // 2)
    comms = make_communicators(comm, replicas)
    lat = qftml.Lattice((8, 6), comm=comms.domain)
    write_trainer_checkpoint(path, comms, *_trainer_contents(comms, lat), write_path=write_path)
    assert not os.path.exists(path + ".tmp")
    _check_read(read_trainer_checkpoint(path, comms, lat), comms, lat)
    with pytest.raises(CheckpointError, match="checkpoint of a trainer, not of a chain"):
        read_checkpoint(path, lat)
    assert read_checkpoint_state(path)["epoch"] == 3
    sub = comm.Split(0 if comm.rank < replicas else 1, comm.rank)
    if comm.size >= 2 and comm.rank < replicas:
        small = make_communicators(sub, replicas)       # one rank per replica
        lat1 = qftml.Lattice((8, 6), comm=small.domain)
        assert lat1.local_shape == (8, 6)
        _check_read(read_trainer_checkpoint(path, small, lat1), small, lat1)
    sub.Free()
    comm.Barrier()


def test_trainer_checkpoint_rejects_another_replica_count_and_lattice(comm, tmp_path):
    comms = make_communicators(MPI.COMM_SELF, 1)
    lat = qftml.Lattice((8, 6), comm=comms.domain)
    path = str(tmp_path / "t.ckpt")
    write_trainer_checkpoint(path, comms, *_trainer_contents(comms, lat))

    class Two:  # as if the resumed run had 2 replicas
        replicas, replica, world = 2, 0, MPI.COMM_SELF
    with pytest.raises(CheckpointError, match="has 1 replicas, not 2"):
        read_trainer_checkpoint(path, Two, lat)
    with pytest.raises(CheckpointError, match=r"fields of shape \(1, 8, 6\), but the lattice is \[1, 8, 8\]"):
        read_trainer_checkpoint(path, comms, qftml.Lattice((8, 8), comm=comms.domain))
    chain = str(tmp_path / "c.ckpt")
    write_checkpoint(chain, _chain(comms.domain)[2].field, {"physics": PHYSICS, "sweep_index": 0, "step": 1.0,
                                                            "n_records": 0})
    with pytest.raises(CheckpointError, match="checkpoint of a chain, not of a trainer"):
        read_trainer_checkpoint(chain, comms, lat)
