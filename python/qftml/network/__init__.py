"""phi^4 neural networks (DESIGN 1.6): the restricted-Boltzmann family derived from phi^4.

Modules: units (Layer: gaussian / bernoulli / phi4 units and their exact 1D conditionals), model
(Network, PRESETS, block Gibbs), training (Trainer: PCD / CD-k over ranks, NetworkStop), ais
(ln Z by annealed importance sampling), data (digits, ensembles, .npy, held-out split), stack
(greedy stacks, output file, checkpoints), driver (the `qftml network` run), estimator
(PhiNetwork: the scikit-learn estimator API). Exact oracles: qftml.exact.network.
"""
from qftml.network.model import PRESETS, Network, make_network
from qftml.network.units import KINDS, Layer

__all__ = ["PRESETS", "KINDS", "Layer", "Network", "make_network"]
