"""qftml: lattice field theories as machine-learning models, at cluster scale."""
from qftml._mpi_check import check_same_mpi as _check_same_mpi

_check_same_mpi()

from qftml.engine.lattice import Lattice, Field  # noqa: E402
from qftml.engine.action import Action  # noqa: E402
from qftml.engine.sampler import Sampler  # noqa: E402
from qftml.engine.observables import measure  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Lattice", "Field", "Action", "Sampler", "measure", "__version__"]
