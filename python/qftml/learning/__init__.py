"""Learning actions (DESIGN 1.3 KL(p||q); 1.5 KL(q||p) from data).

Modules: model (the couplings theta, random initial couplings), gradient (Cov_p(S - A, dS/dtheta),
Fisher blocks), chains (persistent chains over replicas x domains), trainer (epochs of sample ->
gradient -> update, the normalisability guard), optimizers (SGD, momentum, Adam, schedules),
free_energy (F_S by thermodynamic integration), driver (the `qftml learn` run and the pieces other
trainers share: config keys, checkpoints, couplings output).

Re-exported here: Model, random_couplings, GradientEstimator, GradientResult, PersistentChain,
Trainer, EpochRecord, update_couplings, normalisable_action, gather_global.
"""
from qftml.learning.chains import PersistentChain
from qftml.learning.gradient import GradientEstimator, GradientResult
from qftml.learning.model import Model, random_couplings
from qftml.learning.trainer import EpochRecord, Trainer, gather_global, normalisable_action, update_couplings

__all__ = ["Model", "random_couplings", "GradientEstimator", "GradientResult", "PersistentChain", "Trainer",
           "EpochRecord", "update_couplings", "normalisable_action", "gather_global"]
