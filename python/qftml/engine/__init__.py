"""The engine's Python face: the only package that imports the C++ extension qftml._core.

Modules: lattice (Lattice, Field), action (Action), sampler (Sampler), observables (measure).
"""
