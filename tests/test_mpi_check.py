"""The import-time check that the extension and mpi4py use the same MPI library."""
import types

import pytest

from qftml import _mpi_check


def test_same_mpi_passes():
    _mpi_check.check_same_mpi()


def test_different_mpi_is_refused_with_a_clear_message(monkeypatch):
    fake = types.SimpleNamespace(mpi_library_version=lambda: "Open MPI v5.0.3, package: Open MPI")
    monkeypatch.setattr(_mpi_check, "_core", fake)
    with pytest.raises(ImportError, match="built against a different MPI than mpi4py loads"):
        _mpi_check.check_same_mpi()
