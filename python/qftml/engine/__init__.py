"""The engine's Python face: the only package that imports the C++ extension qftml._core.

Modules: lattice (Lattice, Field), action (Action), sampler (Sampler), observables (measure), quartic
(exact draws and integrals of the 1D density exp(-alpha x^2 - beta x^4 + j x)).
"""
