"""Ensemble files and couplings files: schema, hyperslab writing on any rank count, crash-safety
ordering, clean errors for damaged files. Tests marked mpi run on every rank."""
import os

import h5py
import numpy as np
import pytest

import qftml
from qftml.io.couplings import (action_from_couplings, couplings_digest, read_couplings, write_couplings,
                                write_global_couplings)
from qftml.io.ensembles import (BlockFile, EnsembleFileError, EnsembleWriter, choose_write_path, observable_layout,
                               read_attrs, read_configs, read_observables, stack_observables)


def shared_tmp(comm, tmp_path_factory):
    """One directory for every rank (rank 0 makes it)."""
    path = str(tmp_path_factory.mktemp("ens")) if comm.rank == 0 else None
    return comm.bcast(path, root=0)


def _write_ensemble(path, comm, n_batches=3, batch=4, store=True, write_path=None):
    """Sample a small chain and write it; return the gathered configs and observables (rank 0)."""
    lat = qftml.Lattice((8, 4), comm=comm)
    act = qftml.Action.homogeneous(lat, kappa=0.3, mu2=0.5, lam=0.2)
    s = qftml.Sampler(act, seed=5)
    layout = observable_layout(lat, act)
    w = EnsembleWriter.create(path, lat, {"seed": 5, "lattice": {"shape": [8, 4]}}, layout, act.couplings(),
                              store_configs=store, batch=batch, write_path=write_path)
    gathered, records = [], []
    for _ in range(n_batches):
        local, recs = [], []
        for _ in range(batch):
            s.sweep(1)
            r = qftml.measure(s.field, act)
            r["sweep"] = s.sweep_index
            recs.append(r)
            local.append(s.field.local)
            gathered.append(s.field.gather(0))
        w.append(np.array(local) if store else None, stack_observables(recs, layout))
        records += recs
    w.close()
    return lat, act, gathered, records


@pytest.mark.mpi
def test_each_rank_writes_its_hyperslab_in_global_order(comm, tmp_path_factory):
    path = os.path.join(shared_tmp(comm, tmp_path_factory), "e.h5")
    lat, act, gathered, records = _write_ensemble(path, comm)
    comm.Barrier()
    configs = read_configs(path)
    obs = read_observables(path)
    assert configs.shape == (12, 8, 4)
    if comm.rank == 0:
        assert np.array_equal(configs, np.array(gathered))
    assert np.array_equal(obs["m"], [r["m"] for r in records])
    assert np.array_equal(obs["sweep"], np.arange(1, 13))
    assert obs["slice_sums"].shape == (12, 8)
    # /couplings holds the global arrays: each rank's block in place
    with h5py.File(path, "r") as f:
        for fam, local in act.couplings().items():
            assert np.array_equal(f["couplings"][fam][lat.local_slices], local)
    comm.Barrier()


def test_schema_readable_with_plain_h5py(comm, tmp_path):
    path = str(tmp_path / "e.h5")
    lat, act, gathered, records = _write_ensemble(path, comm, n_batches=2, batch=3)
    with h5py.File(path, "r") as f:
        n = int(f.attrs["n_records"])
        assert n == 6 and f.attrs["format"] == "qftml-ensemble"
        assert f["configs"].dtype == np.float64 and f["configs"].shape == (6, 8, 4)
        for name in ("M", "m", "abs_m", "m2", "m4", "sum_phi2", "sum_phi4", "action", "sum_links_nn",
                     "link_sum_0", "link_sum_1", "sweep"):
            assert f["observables"][name].shape == (6,), name
        assert f["observables/slice_sums"].shape == (6, 8)
        assert f["couplings/w"].shape == (8, 4, 2) and f["couplings/a"].shape == (8, 4)
        assert f["couplings/g"].shape == (8, 4, 0)
        # the observables agree with the configurations they belong to
        phi = f["configs"][:n]
        np.testing.assert_allclose(f["observables/M"][:n], phi.sum(axis=(1, 2)), rtol=1e-12)
        np.testing.assert_allclose(f["observables/slice_sums"][:n], phi.sum(axis=2), rtol=1e-12, atol=1e-12)
        links0 = (phi * np.roll(phi, -1, axis=1)).sum(axis=(1, 2))
        np.testing.assert_allclose(f["observables/link_sum_0"][:n], links0, rtol=1e-12)
        a = f["couplings/a"][0, 0]
        assert a == pytest.approx(0.5 * (0.5 + 4 * 0.3))
    assert read_attrs(path)["lattice"] == {"shape": [8, 4]}


def test_observables_only(comm, tmp_path):
    path = str(tmp_path / "o.h5")
    _write_ensemble(path, comm, n_batches=2, batch=2, store=False)
    with h5py.File(path, "r") as f:
        assert "configs" not in f and f["observables/m"].shape == (4,)
    with pytest.raises(EnsembleFileError, match="not stored"):
        read_configs(path)


def test_record_count_only_covers_flushed_batches(comm, tmp_path):
    """Rows beyond n_records (a batch cut short) are ignored by readers and dropped by reopen."""
    path = str(tmp_path / "e.h5")
    lat, act, gathered, records = _write_ensemble(path, comm, n_batches=2, batch=2)
    with h5py.File(path, "r+") as f:  # simulate a kill after the resize, before n_records moved
        for ds in [f["configs"]] + list(f["observables"].values()):
            ds.resize(6, axis=0)
    assert len(read_observables(path)["m"]) == 4
    layout = observable_layout(lat, act)
    w = EnsembleWriter.reopen(path, lat, 3, layout, True)
    w.close()
    with h5py.File(path, "r") as f:
        assert f.attrs["n_records"] == 3 and f["configs"].shape[0] == 3 and f["observables/m"].shape == (3,)
    with pytest.raises(EnsembleFileError, match="holds 3 records"):
        EnsembleWriter.reopen(path, lat, 5, layout, True)


def test_damaged_files_give_clear_errors(comm, tmp_path):
    path = str(tmp_path / "e.h5")
    _write_ensemble(path, comm, n_batches=1, batch=2)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(size // 3)
    bad = str(tmp_path / "truncated.h5")
    with open(bad, "wb") as f:
        f.write(head)
    with pytest.raises(EnsembleFileError, match="truncated or corrupt"):
        read_observables(bad)
    junk = str(tmp_path / "junk.h5")
    with open(junk, "wb") as f:
        f.write(b"not hdf5 at all" * 100)
    with pytest.raises(EnsembleFileError, match="not a readable HDF5 file"):
        read_attrs(junk)
    with pytest.raises(EnsembleFileError, match="no such file"):
        read_observables(str(tmp_path / "missing.h5"))
    foreign = str(tmp_path / "foreign.h5")
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(EnsembleFileError, match="not a qftml ensemble"):
        read_observables(foreign)


@pytest.mark.mpi
def test_couplings_round_trip_by_hyperslabs(comm, tmp_path_factory):
    d = shared_tmp(comm, tmp_path_factory)
    lat = qftml.Lattice((8, 8), comm=comm)
    rng = np.random.default_rng(3)
    w = 0.2 + 0.1 * rng.random((8, 8, 2))
    g = 0.05 * rng.random((8, 8, 2))
    a = 1.0 + rng.random((8, 8))
    b = 0.1 + 0.1 * rng.random((8, 8))
    path = os.path.join(d, "c.h5")
    if comm.rank == 0:
        write_global_couplings(path, {"w": w, "g": g, "a": a, "b": b, "r": 0.3}, extra_offsets=[(1, 1), (1, -1)])
    comm.Barrier()
    act = action_from_couplings(path, lat)
    c = act.couplings()
    assert np.array_equal(c["w"], lat.local_block(w)) and np.array_equal(c["g"], lat.local_block(g))
    assert np.array_equal(c["a"], lat.local_block(a)) and np.all(c["r"] == 0.3)
    assert act.offsets[2:] == [(1, 1), (1, -1)]
    # an action written back by hyperslabs reads back identically, with the same digest of values
    out = os.path.join(d, "c2.h5")
    write_couplings(out, act)
    comm.Barrier()
    local, attrs = read_couplings(out, lat)
    assert np.array_equal(local["b"], lat.local_block(b)) and attrs["extra_offsets"] == [[1, 1], [1, -1]]
    if comm.rank == 0:
        with h5py.File(out, "r") as f:
            assert np.array_equal(f["couplings/w"][:], w)
    comm.Barrier()


def test_couplings_shape_errors_name_the_dataset(comm, tmp_path):
    lat = qftml.Lattice((8, 8), comm=comm)
    path = str(tmp_path / "c.h5")
    write_global_couplings(path, {"w": np.ones((8, 8)), "a": 2.0, "b": 0.1})
    with pytest.raises(EnsembleFileError, match=r"/couplings/w has shape \(8, 8\), expected \(8, 8, 2\)"):
        read_couplings(path, lat)
    write_global_couplings(path, {"w": 0.5, "a": 2.0, "b": 0.1})
    d1 = couplings_digest(path)
    write_global_couplings(path, {"w": 0.5, "a": 2.0, "b": 0.2})
    assert couplings_digest(path) != d1


@pytest.mark.mpio
@pytest.mark.mpi
def test_mpio_path_matches_rank0_blocks(comm, tmp_path_factory):
    d = shared_tmp(comm, tmp_path_factory)
    _write_ensemble(os.path.join(d, "a.h5"), comm, write_path="mpio")
    _write_ensemble(os.path.join(d, "b.h5"), comm, write_path="rank0-blocks")
    comm.Barrier()
    assert np.array_equal(read_configs(os.path.join(d, "a.h5")), read_configs(os.path.join(d, "b.h5")))


@pytest.mark.mpio
@pytest.mark.mpi
def test_parallel_h5py_writes_collectively_on_every_rank(comm, tmp_path_factory):
    """With h5py on parallel HDF5 several ranks write collectively by default: the file is open on
    every rank with the mpio driver and each rank writes only its own hyperslab (no transfer to rank 0)."""
    if comm.size > 1 and not os.environ.get("QFTML_WRITE_PATH"):
        assert choose_write_path(comm) == "mpio"
    path = os.path.join(shared_tmp(comm, tmp_path_factory), "blocks.h5")
    lat = qftml.Lattice((8, 4), comm=comm)
    bf = BlockFile(path, "w", lat, "mpio")
    try:
        assert bf.owns_file and bf.file.driver == "mpio"
        bf.create("rank", tuple(lat.shape) + (2,))
        bf.write_blocks("rank", (), np.full(tuple(lat.local_shape) + (2,), float(comm.rank)))
    finally:
        bf.close()
    comm.Barrier()
    with h5py.File(path, "r") as f:
        stored = f["rank"][:]
    for r, (offset, shape) in enumerate(comm.allgather((lat.local_offset, lat.local_shape))):
        assert np.all(stored[tuple(slice(o, o + n) for o, n in zip(offset, shape))] == r)
    comm.Barrier()
