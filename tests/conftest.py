"""Shared fixtures and markers. Tests marked `mpi` run on every rank of MPI.COMM_WORLD (1, 2 or 4 ranks).

Marker `mpio`: the test needs h5py built with MPI (the collective MPI-IO write path). Without it
(the pip wheel, `make test`) the test is skipped with that reason. With QFTML_REQUIRE_MPIO=1
(`make test-site-mpi`, where h5py is built against parallel HDF5) a missing MPI in h5py is an
error of the whole run instead, so the collective path can never be skipped silently there.
"""
import os

import h5py
import pytest
from mpi4py import MPI

H5PY_MPI = bool(h5py.get_config().mpi)
REQUIRE_MPIO = os.environ.get("QFTML_REQUIRE_MPIO", "") not in ("", "0")


def pytest_sessionstart(session):
    if REQUIRE_MPIO and not H5PY_MPI:
        pytest.exit(f"QFTML_REQUIRE_MPIO is set but h5py {h5py.version.version} ({h5py.__file__}) was built "
                    f"without MPI (HDF5 {h5py.version.hdf5_version}): the mpio tests cannot run", returncode=3)


def pytest_collection_modifyitems(config, items):
    if H5PY_MPI:
        return
    skip = pytest.mark.skip(reason="h5py was built without MPI (the pip wheel): the collective mpio path cannot "
                                   "run here; `make test-site-mpi` runs it")
    for item in items:
        if item.get_closest_marker("mpio") is not None:
            item.add_marker(skip)


@pytest.fixture
def comm():
    return MPI.COMM_WORLD
