"""Learning actions (DESIGN 1.3 KL(p||q); 1.5 KL(q||p) from data).

Modules: model (the couplings theta), gradient (Cov_p(S - A, dS/dtheta), Fisher blocks), trainer
(epochs of sample -> gradient -> update), optimizers (SGD, momentum, Adam, schedules), free_energy
(F_S by thermodynamic integration), driver (the `qftml learn` run). The main names are re-exported.
"""
from qftml.learning.gradient import GradientEstimator, GradientResult
from qftml.learning.model import Model, random_couplings
from qftml.learning.trainer import EpochRecord, Trainer, gamma_error, gather_global

__all__ = ["Model", "random_couplings", "GradientEstimator", "GradientResult", "Trainer", "EpochRecord",
           "gamma_error", "gather_global"]
