"""Shared fixtures. Tests marked `mpi` run on every rank of MPI.COMM_WORLD (1, 2 or 4 ranks)."""
import pytest
from mpi4py import MPI


@pytest.fixture
def comm():
    return MPI.COMM_WORLD
