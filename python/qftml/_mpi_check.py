"""Refuse to run with two different MPI libraries in one process."""
from mpi4py import MPI

from qftml import _core


def check_same_mpi():
    """Compare the MPI the extension was built against with the one mpi4py loaded.

    Two MPIs in one process fail later in confusing ways (wrong communicators, crashes in
    MPI_Init); a clear ImportError now is kinder.
    """
    ours = _core.mpi_library_version().strip()
    theirs = MPI.Get_library_version().strip()
    if ours.splitlines()[0] != theirs.splitlines()[0]:
        raise ImportError(
            "qftml._core was built against a different MPI than mpi4py loads:\n"
            f"  qftml._core: {ours.splitlines()[0]}\n  mpi4py:      {theirs.splitlines()[0]}\n"
            "Rebuild qftml with the MPI that mpi4py uses (see README, 'Building against a site MPI')."
        )
